"""Dataset layouts and the shared preprocessing: real sample images, real Pillow, real cache files."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

PIL = pytest.importorskip("PIL.Image")

from packager.harness.dataset import DatasetSpec, load_dataset
from packager.harness.errors import (
    ConfigError,
    CorruptImage,
    DatasetError,
    MissingLabel,
)
from packager.harness.preprocess import (
    PreprocessParams,
    load_batch,
    normalize,
    preprocess_all,
    preprocess_bytes,
    tensor_sha256,
)

PARAMS = PreprocessParams(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def test_labels_tsv_layout_reads_the_shared_sample(shared_sample):
    samples = load_dataset(DatasetSpec(root=shared_sample))
    assert len(samples) == 200
    assert samples[0].id == "n01440764_tench.JPEG" and samples[0].label == 0
    assert {s.label for s in samples} == set(range(0, 1000, 5))
    assert load_dataset(DatasetSpec(root=shared_sample), count=7)[-1].id == samples[6].id
    picked = load_dataset(DatasetSpec(root=shared_sample), ids=[samples[9].id, samples[3].id])
    assert [s.id for s in picked] == [samples[9].id, samples[3].id]
    with pytest.raises(DatasetError, match="not in the dataset"):
        load_dataset(DatasetSpec(root=shared_sample), ids=["nope.JPEG"])


def _mini_tsv(tmp_path: Path, shared_sample: Path, n: int = 3) -> Path:
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    lines = ["file\twnid\tclass_index\tclass_name"]
    for s in load_dataset(DatasetSpec(root=shared_sample), count=n):
        shutil.copy(s.path, root / "images" / s.id)
        lines.append(f"{s.id}\tn0\t{s.label}\tx")
    (root / "labels.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_image_without_label_is_an_error_naming_the_labels_file(tmp_path, shared_sample):
    root = _mini_tsv(tmp_path, shared_sample)
    shutil.copy(next((root / "images").iterdir()), root / "images" / "extra.JPEG")
    with pytest.raises(MissingLabel) as e:
        load_dataset(DatasetSpec(root=root))
    assert "labels.tsv" in str(e.value) and "extra.JPEG" in str(e.value)
    assert e.value.return_code == 2


def test_label_without_image_names_the_image(tmp_path, shared_sample):
    root = _mini_tsv(tmp_path, shared_sample)
    victim = sorted((root / "images").iterdir())[1]
    victim.unlink()
    with pytest.raises(DatasetError, match=victim.name):
        load_dataset(DatasetSpec(root=root))


def test_ilsvrc_layout_devkit_ids_map_through_sorted_wnids(tmp_path, shared_sample):
    root = tmp_path / "val"
    root.mkdir()
    src = load_dataset(DatasetSpec(root=shared_sample), count=2)
    for i, s in enumerate(src, start=1):
        shutil.copy(s.path, root / f"ILSVRC2012_val_{i:08d}.JPEG")
    # A synthetic devkit order: ILSVRC id k <-> the (1001-k)-th wnid in sorted order, so id 1000 is index 0.
    wnids = [f"n{10000000 + i:08d}" for i in range(1000)]
    (root / "synsets.txt").write_text("".join(f"{k}\t{wnids[1000 - k]}\n" for k in range(1, 1001)))
    (root / "gt.txt").write_text("1000\n1\n")
    got = load_dataset(DatasetSpec(root=root, layout="ilsvrc2012-val", labels="gt.txt", synsets="synsets.txt"))
    assert [(s.id, s.label) for s in got] == [("ILSVRC2012_val_00000001", 0), ("ILSVRC2012_val_00000002", 999)]
    with pytest.raises(DatasetError, match="synsets"):
        load_dataset(DatasetSpec(root=root, layout="ilsvrc2012-val", labels="gt.txt"))
    # the two-column val.txt form carries 0-999 indices directly
    (root / "val.txt").write_text("ILSVRC2012_val_00000001.JPEG 65\nILSVRC2012_val_00000002.JPEG 3\n")
    got = load_dataset(DatasetSpec(root=root, layout="ilsvrc2012-val", labels="val.txt"))
    assert [s.label for s in got] == [65, 3]
    (root / "val.txt").write_text("ILSVRC2012_val_00000001.JPEG 65\n")
    with pytest.raises(MissingLabel, match="ILSVRC2012_val_00000002"):
        load_dataset(DatasetSpec(root=root, layout="ilsvrc2012-val", labels="val.txt"))


def test_preprocessing_matches_a_hand_computed_pixel(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(pixels).save(path)
    p = PreprocessParams(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5), resize=256, crop=224, interpolation="nearest")
    out = preprocess_bytes(path.read_bytes(), p)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    resized = np.asarray(Image.fromarray(pixels).resize((341, 256), Image.NEAREST), dtype=np.float32)
    top, left = round((256 - 224) / 2), round((341 - 224) / 2)
    want = (resized[top, left] / 255.0 - np.array([0.5, 0.4, 0.3])) / np.array([0.2, 0.25, 0.5])
    np.testing.assert_allclose(out[:, 0, 0], want, rtol=1e-5)
    nhwc_bgr = preprocess_bytes(path.read_bytes(), PreprocessParams(**{**p.__dict__, "layout": "NHWC", "color": "BGR"}))
    np.testing.assert_array_equal(nhwc_bgr[..., ::-1].transpose(2, 0, 1), out)


def test_greyscale_images_become_three_channels(tmp_path):
    from PIL import Image

    path = tmp_path / "grey.jpg"
    Image.fromarray(np.full((64, 80), 128, np.uint8), mode="L").save(path)
    out = preprocess_bytes(path.read_bytes(), PreprocessParams(mean=(0, 0, 0), std=(1, 1, 1), resize=40, crop=32))
    assert out.shape == (3, 32, 32)
    assert np.allclose(out[0], out[1]) and np.allclose(out[1], out[2])


def test_cache_is_keyed_by_image_hash_and_parameters(tmp_path, shared_sample):
    paths = [s.path for s in load_dataset(DatasetSpec(root=shared_sample), count=6)]
    first = preprocess_all(paths, PARAMS, tmp_path, workers=2)
    assert [p.image_sha256 for p in first] == [hashlib.sha256(x.read_bytes()).hexdigest() for x in paths]
    assert all(p.path.name == f"{p.image_sha256}.npy" for p in first)
    mtimes = [p.path.stat().st_mtime_ns for p in first]
    again = preprocess_all(paths, PARAMS, tmp_path, workers=2)
    assert [p.path.stat().st_mtime_ns for p in again] == mtimes  # served from the cache, not rewritten
    other = preprocess_all(paths[:1], PreprocessParams(**{**PARAMS.__dict__, "interpolation": "bicubic"}), tmp_path, workers=1)
    assert other[0].path.parent != first[0].path.parent
    batch = load_batch(first)
    assert batch.shape == (6, 3, 224, 224)
    assert tensor_sha256(batch[0]) == tensor_sha256(preprocess_bytes(paths[0].read_bytes(), PARAMS))


def test_corrupt_image_error_names_the_file_even_from_a_worker(tmp_path, shared_sample):
    good = [s.path for s in load_dataset(DatasetSpec(root=shared_sample), count=5)]
    bad = tmp_path / "broken.JPEG"
    bad.write_bytes(good[0].read_bytes()[:200])
    with pytest.raises(CorruptImage) as e:
        preprocess_all(good + [bad], PARAMS, tmp_path / "cache", workers=2)
    assert str(bad) in str(e.value) and e.value.return_code == 2


def test_bad_parameters_are_config_errors():
    with pytest.raises(ConfigError, match="version"):
        PreprocessParams(mean=(0, 0, 0), std=(1, 1, 1), version=9)
    with pytest.raises(ConfigError, match="crop"):
        PreprocessParams(mean=(0, 0, 0), std=(1, 1, 1), resize=100, crop=224)
    with pytest.raises(ConfigError, match="unknown"):
        PreprocessParams.from_mapping({"mean": [0, 0, 0], "std": [1, 1, 1], "colour": "RGB"})


def test_cached_crops_give_the_very_tensor_preprocess_bytes_gives(tmp_path, shared_sample):
    """The cache keeps uint8 crops (a quarter of the bytes); normalising them on load is bit-for-bit step 4-5."""
    paths = [s.path for s in load_dataset(DatasetSpec(root=shared_sample), count=3)]
    for params in (PARAMS, PreprocessParams(**{**PARAMS.__dict__, "layout": "NHWC", "color": "BGR"})):
        prepared = preprocess_all(paths, params, tmp_path, workers=1)
        assert all(p.path.stat().st_size <= params.crop * params.crop * 3 + 128 for p in prepared)
        batch = load_batch(prepared)
        want = np.stack([preprocess_bytes(p.read_bytes(), params) for p in paths])
        assert batch.dtype == np.float32 and batch.tobytes() == want.tobytes()


def test_a_cache_without_room_is_one_typed_error_naming_it_and_the_bytes(tmp_path, shared_sample):
    from packager.harness.errors import NoSpace
    from packager.harness.preprocess import TensorCache, check_room

    cache = TensorCache(tmp_path, PARAMS)
    cache.dir.mkdir(parents=True)
    with pytest.raises(NoSpace) as e:
        check_room(cache, 10**12)  # a trillion crops fit on no disk
    assert str(cache.dir) in str(e.value) and "needs about" in str(e.value) and "free" in str(e.value)
    assert e.value.return_code == 3 and "\n" not in str(e.value)
    check_room(cache, 10)  # ten do


def _normalize_as_written(pixels: np.ndarray, p: PreprocessParams) -> np.ndarray:
    """The formula of the preprocessing spec, step by step, each step a new array."""
    arr = np.asarray(pixels, dtype=np.float32) * np.float32(p.scale)
    arr = (arr - np.asarray(p.mean, dtype=np.float32)) / np.asarray(p.std, dtype=np.float32)
    if p.color == "BGR":
        arr = arr[..., ::-1]
    if p.layout == "NCHW":
        arr = np.moveaxis(arr, -1, -3)
    return np.ascontiguousarray(arr, dtype=np.float32)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("color", ["RGB", "BGR"])
def test_normalize_gives_the_formula_s_bits_with_one_float32_set_at_its_peak(layout: str, color: str) -> None:
    import tracemalloc

    p = PreprocessParams(**{**PARAMS.__dict__, "layout": layout, "color": color})
    pixels = np.random.default_rng(3).integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)
    want = _normalize_as_written(pixels, p)
    tracemalloc.start()
    try:
        got = normalize(pixels, p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == want.shape
    assert got.tobytes() == want.tobytes()  # bit for bit: tensors, predictions and input hashes unchanged
    assert peak < 1.2 * want.nbytes, f"{peak / want.nbytes:.2f} float32 sets at the peak"  # was 3
    one = normalize(pixels[0], p)
    assert one.tobytes() == want[0].tobytes()
    floats = pixels.astype(np.float32)
    normalize(floats, p)
    assert np.array_equal(floats, pixels.astype(np.float32))  # the caller's array is never changed
