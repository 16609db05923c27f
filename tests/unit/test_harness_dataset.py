"""Data set layouts as users have them: detected from the directory, overridable, errors naming the user's path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from packager.harness.dataset import DatasetSpec, dataset_record, detect, load_dataset, resolve
from packager.harness.errors import DatasetError, MissingLabel

MANIFEST_HINT = dict(layout="labels-tsv", labels="labels.tsv", images="images", synsets="synsets.tsv")


def _sample_rows(shared_sample: Path, n: int) -> list[list[str]]:
    header, *rows = (shared_sample / "labels.tsv").read_text().splitlines()
    cols = header.split("\t")
    fi, ci = cols.index("file"), cols.index("class_index")
    return [[r.split("\t")[fi], r.split("\t")[ci]] for r in rows[:n]]


def _ilsvrc(shared_sample: Path, root: Path, n: int = 6, *, images: str = ".", devkit: bool = False) -> dict[str, int]:
    """``n`` sample images renamed ILSVRC2012_val_NNNNNNNN.JPEG with a val.txt or the devkit's ground truth."""
    d = root / images
    d.mkdir(parents=True, exist_ok=True)
    truth = {}
    wnids = sorted(line.split("\t")[1] for line in (shared_sample / "synsets.tsv").read_text().splitlines())
    # The devkit numbers synsets in its own order (not sorted wnids): a fixed permutation stands for it.
    devkit_order = wnids[500:] + wnids[:500]
    gt = []
    for k, (name, index) in enumerate(_sample_rows(shared_sample, n), start=1):
        stem = f"ILSVRC2012_val_{k:08d}"
        shutil.copyfile(shared_sample / "images" / name, d / f"{stem}.JPEG")
        truth[stem] = int(index)
        gt.append(f"{stem}.JPEG {index}" if not devkit else str(devkit_order.index(wnids[int(index)]) + 1))
    if devkit:
        (root / "data").mkdir()
        (root / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text("\n".join(gt) + "\n")
        (root / "data" / "synsets.tsv").write_text("".join(f"{i}\t{w}\n" for i, w in enumerate(devkit_order, start=1)))
    else:
        (root / "val.txt").write_text("\n".join(gt) + "\n")
    return truth


def test_labels_tsv_is_detected(shared_sample):
    spec = detect(shared_sample, DatasetSpec(shared_sample, **MANIFEST_HINT))
    assert (spec.layout, spec.labels, spec.chosen) == ("labels-tsv", "labels.tsv", "detected")


@pytest.mark.parametrize("images", [".", "val", "images"])
def test_ilsvrc_val_txt_is_detected_wherever_the_images_are(shared_sample, tmp_path, images):
    truth = _ilsvrc(shared_sample, tmp_path, images=images)
    spec = resolve(tmp_path, DatasetSpec(tmp_path, **MANIFEST_HINT))
    assert (spec.layout, spec.labels, spec.images, spec.chosen) == ("ilsvrc2012-val", "val.txt", images, "detected")
    samples = load_dataset(spec)
    assert {s.id: s.label for s in samples} == truth
    assert dataset_record(spec, len(samples))["layout"] == "ilsvrc2012-val"


def test_devkit_ground_truth_with_its_synsets_maps_to_sorted_wnid_indices(shared_sample, tmp_path):
    truth = _ilsvrc(shared_sample, tmp_path, devkit=True)
    spec = resolve(tmp_path, DatasetSpec(tmp_path, **MANIFEST_HINT))
    assert spec.labels == "data/ILSVRC2012_validation_ground_truth.txt" and spec.synsets == "data/synsets.tsv"
    assert {s.id: s.label for s in load_dataset(spec)} == truth


def test_an_explicit_layout_overrides_detection(shared_sample, tmp_path):
    _ilsvrc(shared_sample, tmp_path)
    (tmp_path / "labels.tsv").write_text("file\tclass_index\n")  # both would fit: the manifest's layout wins ...
    assert resolve(tmp_path, DatasetSpec(tmp_path, **MANIFEST_HINT)).layout == "labels-tsv"
    given = resolve(tmp_path, DatasetSpec(tmp_path, **MANIFEST_HINT), "ilsvrc2012-val")  # ... unless one is named
    assert (given.layout, given.labels, given.chosen) == ("ilsvrc2012-val", "val.txt", "given")


def test_no_known_layout_names_the_users_directory(tmp_path):
    (tmp_path / "a.JPEG").write_bytes(b"x")
    with pytest.raises(DatasetError) as e:
        resolve(tmp_path, DatasetSpec(tmp_path, **MANIFEST_HINT))
    assert str(tmp_path) in str(e.value) and "--dataset-layout" in str(e.value) and e.value.return_code == 2
    with pytest.raises(DatasetError, match="unknown layout"):
        resolve(tmp_path, DatasetSpec(tmp_path, **MANIFEST_HINT), "coco")


def test_an_unlabelled_validation_image_names_the_ground_truth_file(shared_sample, tmp_path):
    _ilsvrc(shared_sample, tmp_path, n=3)
    shutil.copyfile(tmp_path / "ILSVRC2012_val_00000001.JPEG", tmp_path / "ILSVRC2012_val_00000009.JPEG")
    with pytest.raises(MissingLabel) as e:
        load_dataset(resolve(tmp_path, DatasetSpec(tmp_path, **MANIFEST_HINT)))
    assert str(tmp_path / "val.txt") in str(e.value) and "ILSVRC2012_val_00000009" in str(e.value)
