"""What every method stands on; names no method (docs/architecture.md).

data/            input pipelines: tfds, IDX files, the embedded set, synthetic batches
models/          baseline architectures from plain-width descriptions; MobileNet's structure
profile.py       analytic FLOPs/params from a layer list
traced_flops.py  MACs of a traced forward pass, to check a family's layer list
run.py           Run: what a config resolves to (data, schedule, optimizer, mesh)
train_state.py   the train-state dict: init, abstract shapes, init from an export
plain_step.py    the jitted train/eval step of a network trained as it is
loop.py          Loop: resume, log, evaluate, checkpoint, preemption, summary.json
train.py         the baseline trainer (also trains DCFF's scratch control)
evaluation.py    per-batch eval sums and their accumulation
losses.py        cross-entropy
paths.py         the path layer: local paths and gs:// URLs alike (etils.epath)
files.py         JSON written atomically, config.json, provenance.jsonl
provenance.py    the commit, command and config digest every raw output records
storage.py       what a storage failure means: retry, quarantine or stop; location checks
torch_files.py   a safe reader of torch .pt files (allowlisted unpickling, no torch)
torch_import.py  published PyTorch state dicts -> descriptions, variables and exports
checkpoint.py    orbax checkpoints with JSON host state
export.py        exported models: write, load without training code, predict
optim.py         PyTorch-equivalent SGD and schedules
mesh.py          the data mesh
metrics.py       metrics.jsonl and TensorBoard
preemption.py    SIGTERM -> checkpoint and exit 75
compilation_cache.py  the persistent compilation cache and compile counts
config_check.py  checks of the keys every config has
"""
