"""The two tfds training pipelines on real prepared JPEG data (issue 27 part 4): Grain over
array_record resumes without reading what it skips, N processes read the batches of one,
epochs are reshuffled permutations; tf.data over TFRecord shuffles its pieces per epoch and
resumes exactly; both decode and crop alike; the pipeline follows the prepared format."""

import numpy as np
import pytest

from conftest import require

tfds = require("tensorflow_datasets")
require("grain")

from benchmarks import input_pipeline as bench  # noqa: E402
from common_jax import data  # noqa: E402
from common_jax.data import grain_input, image_ops, tfds_input  # noqa: E402

IMAGES, BATCH, SIZE = 40, 8, 64  # 5 steps an epoch
STEPS = IMAGES // BATCH


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The benchmark's JPEGs (labels 0..39, one per file) prepared in both file formats."""
    directory = str(tmp_path_factory.mktemp("tfds"))
    jpegs = bench.make_jpegs(IMAGES)
    for file_format in bench.PIPELINES.values():
        bench.prepare(directory, jpegs, f"jpeg_bench_{file_format}", file_format)
    return directory


def batches(module, data_dir, start, count, process_index=0, process_count=1, **extra):
    name = "jpeg_bench_" + ("array_record" if module is grain_input else "tfrecord")
    stream = module.train_batches(
        name, data_dir, "train", style="imagenet", channels=3, native_size=224,
        global_batch=BATCH, seed=3, start_step=start, augment="none", crop_padding=0,
        image_size=SIZE, min_scale=0.08, color_jitter=0.4, process_index=process_index,
        process_count=process_count, **extra)
    return [next(stream) for _ in range(count)]


def epoch_labels(run):
    labels = np.concatenate([b["label"] for b in run])
    return labels.reshape(-1, STEPS * BATCH)


def test_grain_resume_reads_only_from_its_step_and_equals_the_uninterrupted_run(
        data_dir, monkeypatch):
    run = batches(grain_input, data_dir, 0, 3 * STEPS)
    for start in (3, STEPS + 2):  # inside the first epoch and in the second
        resumed = batches(grain_input, data_dir, start, 3)
        for got, want in zip(resumed, run[start:start + 3]):
            np.testing.assert_array_equal(got["image"], want["image"])
            np.testing.assert_array_equal(got["label"], want["label"])
    plain, sources = grain_input.data_source, []

    def counted(*args):
        sources.append(bench.CountingSource(plain(*args)))
        return sources[-1]
    monkeypatch.setattr(grain_input, "data_source", counted)
    far = batches(grain_input, data_dir, 10 ** 9, 1, threads=1)[0]  # epoch 2e8
    assert far["image"].shape == (BATCH, SIZE, SIZE, 3)
    # one batch plus at most the prefetch buffer (4 batches) was read, not 10^9 batches
    assert 0 < sources[0].reads <= 6 * BATCH


def test_grain_processes_together_read_the_batches_of_one_and_epochs_are_permutations(
        data_dir):
    one = batches(grain_input, data_dir, 0, 2 * STEPS)
    halves = [batches(grain_input, data_dir, 0, 2 * STEPS, process_index=p, process_count=2)
              for p in range(2)]
    for step, batch in enumerate(one):
        for key in ("image", "label"):
            np.testing.assert_array_equal(
                np.concatenate([halves[0][step][key], halves[1][step][key]]), batch[key])
    epochs = epoch_labels(one)
    assert all(sorted(e) == list(range(IMAGES)) for e in epochs)
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch


def test_tf_data_shuffles_its_pieces_per_epoch_and_resumes_exactly(data_dir, monkeypatch):
    monkeypatch.setattr(tfds_input, "MIN_PIECE", 8)  # 5 pieces of 8 records
    run = batches(tfds_input, data_dir, 0, 3 * STEPS, shuffle_buffer=4)
    epochs = epoch_labels(run)
    assert all(sorted(e) == list(range(IMAGES)) for e in epochs)
    assert len({tuple(e) for e in epochs}) == 3
    # a buffer of 4 moves records at most a few places: the piece order shows in each epoch
    pieces = [tuple(np.argsort([np.mean(np.nonzero(e // 8 == k)[0]) for k in range(5)]))
              for e in epochs]
    assert len(set(pieces)) > 1
    resumed = batches(tfds_input, data_dir, STEPS + 2, 3, shuffle_buffer=4)
    for got, want in zip(resumed, run[STEPS + 2:]):
        np.testing.assert_array_equal(got["image"], want["image"])


def test_grain_and_tf_data_decode_and_crop_alike(data_dir):
    common = {"style": "imagenet", "channels": 3, "native_size": 224, "global_batch": 16,
              "image_size": SIZE, "process_index": 0, "process_count": 1}
    grain_eval = next(grain_input.eval_batches("jpeg_bench_array_record", data_dir, "train",
                                               **common))
    tf_eval = next(tfds_input.eval_batches("jpeg_bench_tfrecord", data_dir, "train", **common))
    np.testing.assert_array_equal(grain_eval["label"], tf_eval["label"])
    difference = np.abs(grain_eval["image"].astype(float) - tf_eval["image"].astype(float))
    assert difference.mean() < 2.0, difference.mean()
    # training crops: the same statistics of the same files (different random crops)
    grain_train = np.stack([b["image"] for b in batches(grain_input, data_dir, 0, STEPS)])
    tf_train = np.stack([b["image"] for b in batches(tfds_input, data_dir, 0, STEPS,
                                                     shuffle_buffer=16)])
    assert abs(grain_train.mean() - tf_train.mean()) < 4.0
    assert abs(grain_train.std() - tf_train.std()) < 4.0


def test_random_resized_box_keeps_area_and_aspect_and_falls_back_to_the_whole_image():
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, w, h = image_ops.random_resized_box(500, 375, rng, 0.08)
        assert 0 <= left <= 500 - w and 0 <= top <= 375 - h
        assert 0.08 * 0.9 <= w * h / (500 * 375) <= 1.0
        assert 3 / 4 * 0.95 <= w / h <= 4 / 3 * 1.05
    assert image_ops.random_resized_box(300, 2, rng, 0.5) == (0, 0, 300, 2)


def test_the_prepared_file_format_picks_the_pipeline(data_dir):
    assert data.tfds_pipeline("jpeg_bench_array_record", data_dir) == "grain"
    assert data.tfds_pipeline("jpeg_bench_tfrecord", data_dir) == "tf_data"
