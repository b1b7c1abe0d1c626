"""Reads PyTorch ``.pt`` / ``.pth`` files without torch and without full unpickling.

``load(path)`` returns the saved object with every tensor as a NumPy array: dicts,
``OrderedDict``s, lists, tuples and plain values as they were saved. Both of torch's
formats are read: the zip archive of ``torch.save`` since 1.6 (``<name>/data.pkl`` plus one
record per storage) and the legacy stream of earlier versions and
``_use_new_zipfile_serialization=False`` (magic number, protocol, system info, the pickle,
the storage keys, then each storage's element count and bytes).

The pickle is read by an unpickler that resolves only the globals in ``ALLOWED``: the
OrderedDict, torch's tensor and parameter rebuild functions and storage types, and the
pieces of a pickled NumPy RNG state (``np.random.get_state()``, as the official PSS-Net
checkpoints hold it), which become inert ``Opaque`` values. Any other global is refused with
an ``UnsafeFile`` error naming it before anything of it runs, so a file whose pickle would
call ``os.system`` or create a file does nothing.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile

import ml_dtypes
import numpy as np

from common_jax import paths

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafeFile(ValueError):
    """The file is not a torch file this reader accepts (a refused global, a damaged or
    unknown format); the message names the file and the reason."""


class Opaque:
    """An inert stand-in for an allowed object that is not needed (NumPy RNG-state pieces):
    it records its arguments and state and does nothing."""

    def __init__(self, name: str, *args):
        self.name, self.args, self.state = name, args, None

    def __call__(self, *args):
        return Opaque(self.name, *args)

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"Opaque({self.name})"


class StorageType:
    """A torch storage class (``torch.FloatStorage``): only its element dtype matters."""

    def __init__(self, name: str):
        self.name, self.dtype = name, np.dtype(STORAGE_DTYPES[name])


class _TensorRef:
    """A tensor to build once its storage's bytes are known (legacy files store them after
    the pickle)."""

    def __init__(self, storage, offset: int, size, stride):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)


def _rebuild_tensor(storage, storage_offset, size, stride, *_unused):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_unused):
    return data


def _inert(name: str):
    return lambda *args: Opaque(name, *args)


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes (NumPy's RNG state)."""
    if encoding not in ("latin1", "latin-1"):
        raise UnsafeFile(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): StorageType(name) for name in STORAGE_DTYPES},
    # np.random.get_state() inside a pickled RNG-state tuple: kept as inert values
    **{(module, name): _inert(f"{module}.{name}")
       for module in ("numpy.core.multiarray", "numpy._core.multiarray")
       for name in ("_reconstruct", "scalar")},
    ("numpy", "ndarray"): Opaque("numpy.ndarray"),
    ("numpy", "dtype"): _inert("numpy.dtype"),
    ("_codecs", "encode"): _latin1,
}


class _Unpickler(pickle.Unpickler):
    """Resolves only ``ALLOWED`` globals; storages come from ``load_storage(pid)``."""

    def __init__(self, file, source: str, load_storage=None):
        super().__init__(file)
        self.source, self.load_storage = source, load_storage

    def find_class(self, module, name):
        if (module, name) not in ALLOWED:
            raise UnsafeFile(f"{self.source}: refused to load the global {module}.{name} (only "
                             f"tensors, parameters, OrderedDicts, plain values and NumPy RNG "
                             f"states are read: common_jax.torch_files.ALLOWED)")
        return ALLOWED[(module, name)]

    def persistent_load(self, pid):
        if self.load_storage is None or not (
                isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], StorageType)):
            raise UnsafeFile(f"{self.source}: unknown persistent record {pid!r:.80}")
        return self.load_storage(pid)


class _Storage:
    """One storage: its dtype and, once read, its flat elements."""

    def __init__(self, dtype: np.dtype, numel: int | None = None):
        self.dtype, self.numel, self.flat = dtype, numel, None


def _materialize(obj, source: str):
    """``obj`` with every _TensorRef replaced by its NumPy array (a copy, C-contiguous)."""
    if isinstance(obj, _TensorRef):
        flat = obj.storage.flat
        if flat is None:
            raise UnsafeFile(f"{source}: a tensor's storage has no data (damaged file)")
        needed = obj.offset + sum((n - 1) * s for n, s in zip(obj.size, obj.stride)) + 1
        if min(obj.size, default=1) > 0 and needed > flat.size:
            raise UnsafeFile(f"{source}: a tensor reaches past its storage (damaged file)")
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[obj.offset:], shape=obj.size, strides=[s * itemsize for s in obj.stride])
        return np.array(view, copy=True)
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((k, _materialize(v, source)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _materialize(v, source) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_materialize(v, source) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialize(v, source) for v in obj)
    return obj


def _load_zip(archive: zipfile.ZipFile, source: str):
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
        raise UnsafeFile(f"{source}: a zip file without exactly one data.pkl (not a torch "
                         f"file, or a TorchScript archive, which is not read)")
    prefix = pickles[0][:-len("data.pkl")]
    order = archive.read(prefix + "byteorder").decode() if prefix + "byteorder" in names \
        else "little"
    storages: dict = {}

    def load_storage(pid):
        _, storage_type, key, _location, _numel = pid[:5]
        if key not in storages:
            record = f"{prefix}data/{key}"
            if record not in names:
                raise UnsafeFile(f"{source}: storage record {record} is missing (damaged file)")
            dtype = storage_type.dtype.newbyteorder("<" if order == "little" else ">")
            storage = _Storage(storage_type.dtype)
            storage.flat = np.frombuffer(archive.read(record), dtype=dtype).astype(
                storage_type.dtype)
            storages[key] = storage
        return storages[key]

    return _Unpickler(io.BytesIO(archive.read(pickles[0])), source, load_storage).load()


def _load_legacy(data: bytes, source: str):
    """torch's format before 1.6: consecutive pickles (magic number, protocol, system info,
    the object, the storage keys), then each storage as int64 element count + bytes."""
    stream = io.BytesIO(data)
    roots: dict = {}
    views: list = []

    def load_storage(pid):
        _, storage_type, root_key, _location, numel, view = (tuple(pid) + (None,))[:6]
        root = roots.setdefault(root_key, _Storage(storage_type.dtype, numel))
        if view is None:
            return root
        storage = _Storage(storage_type.dtype)
        views.append((storage, root, int(view[1]), int(view[2])))
        return storage

    def next_pickle(load_storage=None):
        try:
            return _Unpickler(stream, source, load_storage).load()
        except (pickle.UnpicklingError, EOFError, IndexError, TypeError) as error:
            raise UnsafeFile(f"{source}: not a torch file, or a damaged one "
                             f"({type(error).__name__}: {error})") from None

    if next_pickle() != LEGACY_MAGIC:
        raise UnsafeFile(f"{source}: not a torch file (neither a zip archive nor torch's "
                         f"legacy format)")
    if next_pickle() != LEGACY_PROTOCOL:
        raise UnsafeFile(f"{source}: unsupported legacy torch protocol")
    next_pickle()  # system info: byte order and type sizes
    result = next_pickle(load_storage)
    keys = next_pickle()
    if not isinstance(keys, list):
        raise UnsafeFile(f"{source}: the legacy storage list is damaged")
    for key in keys:
        storage, header = roots.get(key), stream.read(8)
        if storage is None or len(header) != 8:
            raise UnsafeFile(f"{source}: legacy storage {key!r} is missing (damaged file)")
        nbytes = struct.unpack("<q", header)[0] * storage.dtype.itemsize
        raw = stream.read(nbytes)
        if len(raw) != nbytes:
            raise UnsafeFile(f"{source}: legacy storage {key!r} is truncated (damaged file)")
        storage.flat = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<")).astype(
            storage.dtype)
    for storage, root, offset, size in views:
        if root.flat is not None:
            storage.flat = root.flat[offset:offset + size]
    return result


def load(path: str):
    """The object saved in the torch file at ``path`` (local or a URL), tensors as NumPy
    arrays; UnsafeFile naming the refused global or the damage."""
    data = paths.read_bytes(path)
    source = str(path)
    if zipfile.is_zipfile(io.BytesIO(data)):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                result = _load_zip(archive, source)
        except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError) as error:
            raise UnsafeFile(f"{source}: a damaged torch zip file ({error})") from None
    else:
        result = _load_legacy(data, source)
    return _materialize(result, source)
