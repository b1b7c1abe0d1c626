"""The two tfds training pipelines side by side on the same real JPEG files: tf.data over
TFRecord (``common_jax/data/tfds_input.py``) and Grain over array_record
(``common_jax/data/grain_input.py``), with the PSS-Net ImageNet augmentation.

    python benchmarks/input_pipeline.py [--images=1024] [--batch=64] [--cores=1] [--out=FILE]

Makes ``--images`` JPEGs at ImageNet sizes (crops of matplotlib's sample photograph resized
to the common ImageNet shapes, with pixel noise so that, at quality 95, they average about
ImageNet's 110 KB per file; the JSON records the mean),
prepares them as one tfds dataset in each file format (in a temporary directory), pins this process to ``--cores`` CPU
cores (each pipeline uses one reading thread per core) and measures per pipeline: training
images/s per core over ``--epochs`` epochs after the first batch (random-resized crop to 224,
flip), the seconds to the first batch at step 0 and when resuming late in the second epoch,
the records each pipeline reads for that resume (tf.data skips the epoch's earlier records by
reading them; Grain's are counted at its data source), and whether the resumed batches equal
the uninterrupted run's. Issue 27 part 4; prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common_jax.provenance import provenance  # noqa: E402  (imports no JAX)

# (width, height) of common ImageNet photographs; each file jitters one by up to 10%
IMAGENET_SHAPES = ((500, 375), (500, 333), (375, 500), (500, 500), (500, 400), (400, 300))
IMAGE_SIZE = 224
PIPELINES = {"tf_data": "tfrecord", "grain": "array_record"}


def sample_photograph():
    import matplotlib
    from PIL import Image
    path = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data",
                        "grace_hopper.jpg")
    return Image.open(path).convert("RGB")


def make_jpegs(count: int, seed: int = 0) -> list[bytes]:
    """``count`` distinct JPEGs at ImageNet shapes: random crops (half the area or more) of
    the sample photograph, resized, mirrored at random, Gaussian noise of 8 grey levels
    added (texture: photographs' JPEGs are larger than a smooth upscale's), quality 95."""
    from PIL import Image
    source = sample_photograph()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        width, height = IMAGENET_SHAPES[rng.integers(len(IMAGENET_SHAPES))]
        width, height = (int(v * rng.uniform(0.9, 1.1)) for v in (width, height))
        sw, sh = source.size
        cw, ch = int(sw * rng.uniform(0.7, 1.0)), int(sh * rng.uniform(0.7, 1.0))
        left, top = int(rng.integers(0, sw - cw + 1)), int(rng.integers(0, sh - ch + 1))
        image = source.resize((width, height), Image.BILINEAR, box=(left, top, left + cw,
                                                                    top + ch))
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        noisy = np.asarray(image, np.float32) + rng.normal(0, 8, (height, width, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, "JPEG",
                                                                      quality=95)
        out.append(buffer.getvalue())
    return out


def prepare(data_dir: str, jpegs: list[bytes], name: str, file_format: str) -> None:
    """Stores the JPEGs (bytes unchanged) and labels ``i % 1000`` as tfds dataset ``name``."""
    import tensorflow_datasets as tfds
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
        "label": tfds.features.ClassLabel(num_classes=1000)})
    examples = [(i, {"image": io.BytesIO(b), "label": i % 1000}) for i, b in enumerate(jpegs)]
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version="1.0.0", features=features, split_datasets={"train": examples},
        data_dir=data_dir, file_format=file_format, disable_shuffling=True)


class CountingSource:
    """A data source that counts the records read from it."""

    def __init__(self, source):
        self.source, self.reads = source, 0

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        self.reads += 1
        return self.source[index]


def measure(pipeline: str, data_dir: str, *, num_images: int, batch: int, epochs: int) -> dict:
    from common_jax.data import grain_input, tfds_input
    module = grain_input if pipeline == "grain" else tfds_input
    name = f"jpeg_bench_{PIPELINES[pipeline]}"
    sources = []
    if pipeline == "grain":  # count the records Grain reads
        plain = grain_input.data_source

        def counted(*args):
            sources.append(CountingSource(plain(*args)))
            return sources[-1]
        grain_input.data_source = counted
    options = {} if pipeline == "grain" else {"shuffle_buffer": 1024}

    def stream(start):
        return module.train_batches(
            name, data_dir, "train", style="imagenet", channels=3, native_size=IMAGE_SIZE,
            global_batch=batch, seed=0, start_step=start, augment="none", crop_padding=0,
            image_size=IMAGE_SIZE, min_scale=0.08, color_jitter=0.0, process_index=0,
            process_count=1, **options)

    steps_per_epoch = num_images // batch
    begin = time.perf_counter()
    run = stream(0)
    first = next(run)
    first_batch_s = time.perf_counter() - begin
    steps = epochs * steps_per_epoch
    begin = time.perf_counter()
    uninterrupted = [first] + [next(run) for _ in range(steps)]
    images_per_s = steps * batch / (time.perf_counter() - begin)
    resume_step = steps_per_epoch + int(0.9 * steps_per_epoch)
    reads_before = sources[-1].reads if sources else None
    begin = time.perf_counter()
    resumed = stream(resume_step)
    resumed_first = next(resumed)
    resume_s = time.perf_counter() - begin
    if sources:  # Grain: records read by the resumed stream up to its first batch
        resume_reads = sources[-1].reads
    else:  # tf.data: the epoch's records before the resume step, read and dropped
        resume_reads = (resume_step % steps_per_epoch) * batch
    exact = all(np.array_equal(a["image"], b["image"]) and np.array_equal(a["label"], b["label"])
                for a, b in zip([resumed_first, next(resumed)],
                                uninterrupted[resume_step:resume_step + 2]))
    if pipeline == "grain":
        grain_input.data_source = plain
    return {"file_format": PIPELINES[pipeline], "first_batch_s": round(first_batch_s, 3),
            "images_per_s": round(images_per_s, 1), "measured_steps": steps,
            "resume_step": resume_step, "resume_first_batch_s": round(resume_s, 3),
            "resume_records_read": resume_reads, "resume_exact": bool(exact),
            "reads_of_uninterrupted_run": reads_before}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/input_pipeline.json")
    args = parser.parse_args(argv)
    if args.images < 2 * args.batch:
        parser.error(f"--images={args.images}: need at least two batches of {args.batch}")
    allowed = sorted(os.sched_getaffinity(0))
    if args.cores > len(allowed):
        parser.error(f"--cores={args.cores}: this process may use {len(allowed)} cores")
    os.sched_setaffinity(0, allowed[:args.cores])

    jpegs = make_jpegs(args.images)
    data_dir = tempfile.mkdtemp(prefix="input_pipeline_")
    for file_format in PIPELINES.values():
        prepare(data_dir, jpegs, f"jpeg_bench_{file_format}", file_format)
    results = {pipeline: measure(pipeline, data_dir, num_images=args.images,
                                 batch=args.batch, epochs=args.epochs)
               for pipeline in PIPELINES}
    for entry in results.values():
        entry["images_per_s_per_core"] = round(entry["images_per_s"] / args.cores, 1)
    from importlib import metadata
    record = {
        "benchmark": "input_pipeline", "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {args.cores} of {os.cpu_count()} CPU cores",
        "versions": {package: metadata.version(package) for package in
                     ("tensorflow-cpu", "tensorflow-datasets", "grain", "array_record",
                      "pillow")},
        "images": args.images, "mean_jpeg_kb": round(sum(map(len, jpegs)) / len(jpegs) / 1e3, 1),
        "batch": args.batch, "image_size": IMAGE_SIZE, "cores": args.cores,
        "augmentation": "random-resized crop (area 0.08-1) to 224, flip (PSS-Net ImageNet)",
        "pipelines": results, "provenance": provenance(sys.argv),
    }
    print(f"{'pipeline':10s} {'img/s/core':>10s} {'first batch s':>13s} "
          f"{'resume s':>9s} {'resume reads':>12s} exact")
    for pipeline, r in results.items():
        print(f"{pipeline:10s} {r['images_per_s_per_core']:10.1f} {r['first_batch_s']:13.2f} "
              f"{r['resume_first_batch_s']:9.2f} {r['resume_records_read']:12d} "
              f"{r['resume_exact']}")
    shutil.rmtree(data_dir)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
