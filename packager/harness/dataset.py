"""Datasets the harness evaluates: a labels-TSV directory or the ILSVRC2012 validation layout.

Two layouts, both yielding ``Sample(id, path, label)`` with ``label`` the
standard 0-999 ImageNet-1k index (synsets in sorted WordNet-id order, the order
torchvision and timm models are trained with):

``labels-tsv``
    ``<root>/<labels>`` is a TSV with a header naming at least ``file`` and
    ``class_index`` (the shared sample also has ``wnid`` and ``class_name``);
    images live in ``<root>/<images>/``. The id of a sample is its file name.

``ilsvrc2012-val``
    ``ILSVRC2012_val_NNNNNNNN.JPEG`` files in ``<root>/<images>/`` (or in
    ``<root>`` itself) and a ground-truth file ``<root>/<labels>`` in one of two
    forms, told apart by the number of columns:

    * one column (the devkit's ``ILSVRC2012_validation_ground_truth.txt``): line
      *i* holds the 1-based ILSVRC2012_ID of image *i*. Those ids follow the
      devkit's ``meta.mat`` order, which is *not* the sorted-wnid order, so a
      ``synsets`` file is required: a TSV of ``ilsvrc2012_id<TAB>wnid`` for ids
      1..1000 (exported from ``meta.mat``). The class index of an image is the
      rank of its wnid among the 1000 wnids sorted, i.e. the 0-999 index.
    * two columns (``ILSVRC2012_val_00000001.JPEG 65``, the widespread
      ``val.txt``): the second column already is the 0-999 index.

    The id of a sample is the file stem, ``ILSVRC2012_val_NNNNNNNN``.

Subsets: the first ``count`` samples in the dataset's order, or an explicit id list.

A user points ``--dataset`` at a directory as they have it: ``detect`` finds its
layout (``resolve`` unless one is given): a ``labels.tsv`` with ``file`` and
``class_index`` columns is labels-tsv; ``ILSVRC2012_val_*.JPEG`` files (in
``images/``, ``val/``, ``ILSVRC2012_img_val/`` or the directory itself) with a
``val.txt`` or the devkit's ``ILSVRC2012_validation_ground_truth.txt`` (also
under ``data/`` or ``ILSVRC2012_devkit_t12/data/``) are ilsvrc2012-val. The
manifest's dataset section is the first guess, never a requirement.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from packager.harness.errors import DatasetError, MissingLabel

log = logging.getLogger(__name__)

LAYOUTS = ("labels-tsv", "ilsvrc2012-val")
_VAL_RE = re.compile(r"^ILSVRC2012_val_(\d{8})\.(JPEG|jpeg|jpg|JPG)$")


@dataclass(frozen=True)
class Sample:
    id: str
    path: Path
    label: int


@dataclass(frozen=True)
class DatasetSpec:
    root: Path
    layout: str = "labels-tsv"
    labels: str = "labels.tsv"
    images: str = "images"
    synsets: str | None = None
    note: str | None = None
    # "detected" from the directory, or "given" (an explicit layout or file names): recorded with the result.
    chosen: str = "given"


def load_dataset(spec: DatasetSpec, *, count: int | None = None, ids: Sequence[str] | None = None) -> list[Sample]:
    """All samples of the dataset (or the requested subset), in a stable order."""
    root = Path(spec.root)
    if not root.is_dir():
        raise DatasetError("dataset directory does not exist", file=root)
    if spec.layout == "labels-tsv":
        samples = _labels_tsv(root, spec)
    elif spec.layout == "ilsvrc2012-val":
        samples = _ilsvrc_val(root, spec)
    else:
        raise DatasetError(f"unknown layout {spec.layout!r} (known: {', '.join(LAYOUTS)})", file=root, field="layout")
    return select(samples, count=count, ids=ids, where=root)


VAL_GROUND_TRUTH = ("val.txt", "ILSVRC2012_validation_ground_truth.txt")
_GT_DIRS = ("", "data", "ILSVRC2012_devkit_t12/data")
_VAL_IMAGE_DIRS = ("images", "val", "ILSVRC2012_img_val", ".")


def resolve(root: Path, hint: DatasetSpec, layout: str | None = None) -> DatasetSpec:
    """The spec to read ``root`` with: ``layout`` when given (file names from ``hint`` or that
    layout's usual ones), else what ``detect`` finds."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError("dataset directory does not exist", file=root)
    if layout is None or layout == "auto":
        return detect(root, hint)
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown layout {layout!r} (known: {', '.join(LAYOUTS)}, auto)", file=root, field="layout")
    if layout == hint.layout:
        return replace(hint, root=root, chosen="given")
    found = [c for c in _candidates(root, hint) if c.layout == layout]  # the hint's file names are another layout's
    if found:
        return replace(found[0], chosen="given")
    usual = "labels.tsv" if layout == "labels-tsv" else VAL_GROUND_TRUTH[0]
    return replace(hint, root=root, layout=layout, labels=usual, chosen="given")


def detect(root: Path, hint: DatasetSpec) -> DatasetSpec:
    """The layout of ``root`` as found on disk; the hint's layout wins when both would fit."""
    found = _candidates(Path(root), hint)
    if not found:
        raise DatasetError(
            "no known dataset layout here: expected a labels.tsv (labels-tsv) or ILSVRC2012_val_*.JPEG files "
            f"with {' or '.join(VAL_GROUND_TRUTH)} (ilsvrc2012-val); or name the layout with --dataset-layout",
            file=root)
    found.sort(key=lambda c: c.layout != hint.layout)
    return replace(found[0], chosen="detected")


def _candidates(root: Path, hint: DatasetSpec) -> list[DatasetSpec]:
    out: list[DatasetSpec] = []
    tsv_names = [hint.labels] if hint.layout == "labels-tsv" else []
    for name in dict.fromkeys([*tsv_names, "labels.tsv"]):
        if _is_labels_tsv(root / name):
            out.append(replace(hint, root=root, layout="labels-tsv", labels=name))
            break
    images = _val_images(root, hint)
    if images is not None:
        gt_names = [hint.labels] if hint.layout == "ilsvrc2012-val" else []
        gt_names += [str(Path(d) / n) for d in _GT_DIRS for n in VAL_GROUND_TRUTH]
        for name in dict.fromkeys(gt_names):
            if (root / name).is_file():
                synsets = hint.synsets if hint.synsets and (root / hint.synsets).is_file() else None
                if synsets is None:
                    near = [str(Path(name).parent / "synsets.tsv"), "synsets.tsv"]
                    synsets = next((n for n in near if (root / n).is_file()), None)
                out.append(replace(hint, root=root, layout="ilsvrc2012-val", labels=name, images=images, synsets=synsets))
                break
    return out


def _is_labels_tsv(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as f:
            header = f.readline().rstrip("\n").split("\t")
    except (OSError, UnicodeDecodeError):
        return False
    return "file" in header and "class_index" in header


def _val_images(root: Path, hint: DatasetSpec) -> str | None:
    """The directory (relative to ``root``) holding ILSVRC2012_val_* images, if any."""
    for name in dict.fromkeys([hint.images, *_VAL_IMAGE_DIRS]):
        d = root / name
        if not d.is_dir():
            continue
        with os.scandir(d) as it:
            if any(_VAL_RE.match(e.name) for e in it):
                return name
    return None


def dataset_record(spec: DatasetSpec, samples: int) -> dict[str, str | int | None]:
    """How the data set was read, for metrics.json: enough to read it the same way again."""
    return {"layout": spec.layout, "labels": spec.labels, "images": spec.images, "synsets": spec.synsets,
            "chosen": spec.chosen, "samples": samples}


def select(samples: list[Sample], *, count: int | None, ids: Sequence[str] | None, where: Path) -> list[Sample]:
    if ids is not None:
        by_id = {s.id: s for s in samples}
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise DatasetError(f"{len(unknown)} requested id(s) not in the dataset, first {unknown[0]!r}", file=where)
        samples = [by_id[i] for i in dict.fromkeys(ids)]
    if count is not None:
        if count < 1:
            raise DatasetError(f"sample count must be >= 1, got {count}", file=where)
        samples = samples[:count]
    if not samples:
        raise DatasetError("dataset has no samples", file=where)
    return samples


def _image_dir(root: Path, spec: DatasetSpec) -> Path:
    d = root / spec.images
    return d if d.is_dir() else root


def _labels_tsv(root: Path, spec: DatasetSpec) -> list[Sample]:
    labels = root / spec.labels
    if not labels.is_file():
        raise DatasetError("labels file does not exist", file=labels)
    images = _image_dir(root, spec)
    lines = labels.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise DatasetError("labels file is empty", file=labels)
    header = lines[0].split("\t")
    for col in ("file", "class_index"):
        if col not in header:
            raise DatasetError(f"header has no {col!r} column (header: {header})", file=labels, field="header")
    fi, ci = header.index("file"), header.index("class_index")
    samples: list[Sample] = []
    seen: set[str] = set()
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != len(header):
            raise DatasetError(f"{len(cols)} columns, header has {len(header)}", file=labels, field=f"line {n}")
        name = cols[fi]
        if name in seen:
            raise DatasetError(f"duplicate file {name!r}", file=labels, field=f"line {n}")
        seen.add(name)
        try:
            label = int(cols[ci])
        except ValueError:
            raise DatasetError(f"class_index {cols[ci]!r} is not an integer", file=labels, field=f"line {n}") from None
        if "/" in name or name.startswith("."):
            raise DatasetError(f"file {name!r} must be a plain file name", file=labels, field=f"line {n}")
        samples.append(Sample(id=name, path=images / name, label=label))
    _check_present(samples, images, labels)
    return samples


def _check_present(samples: list[Sample], images: Path, labels: Path) -> None:
    """Images on disk without a label, or labels without an image, are errors naming the file."""
    on_disk = {p.name for p in images.iterdir() if p.is_file() and p.suffix.lower() in (".jpeg", ".jpg", ".png")}
    listed = {s.path.name for s in samples}
    missing = sorted(listed - on_disk)
    if missing:
        raise DatasetError(f"listed in {labels.name} but missing ({len(missing)} file(s))", file=images / missing[0])
    unlabeled = sorted(on_disk - listed)
    if unlabeled:
        raise MissingLabel(labels, unlabeled[0])


def _ilsvrc_val(root: Path, spec: DatasetSpec) -> list[Sample]:
    gt = root / spec.labels
    if not gt.is_file():
        raise DatasetError("ground-truth file does not exist", file=gt)
    images = _image_dir(root, spec)
    rows = [line.split() for line in gt.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise DatasetError("ground-truth file is empty", file=gt)
    width = len(rows[0])
    labels: dict[str, int] = {}
    if width == 1:
        to_index = _ilsvrc_id_map(root, spec, gt)
        for n, row in enumerate(rows, start=1):
            if len(row) != 1:
                raise DatasetError("expected one column (1-based ILSVRC2012_ID)", file=gt, field=f"line {n}")
            ilsvrc_id = _int(row[0], gt, n)
            if ilsvrc_id not in to_index:
                raise DatasetError(f"ILSVRC2012_ID {ilsvrc_id} not in 1..1000", file=gt, field=f"line {n}")
            labels[f"ILSVRC2012_val_{n:08d}"] = to_index[ilsvrc_id]
    elif width == 2:
        for n, row in enumerate(rows, start=1):
            m = _VAL_RE.match(row[0]) if len(row) == 2 else None
            if not m:
                raise DatasetError("expected 'ILSVRC2012_val_NNNNNNNN.JPEG <class_index>'", file=gt, field=f"line {n}")
            labels[Path(row[0]).stem] = _int(row[1], gt, n)
    else:
        raise DatasetError(f"{width} columns; expected 1 (devkit) or 2 (file, index)", file=gt, field="line 1")
    samples = []
    for p in sorted(images.iterdir()):
        if not _VAL_RE.match(p.name):
            continue
        if p.stem not in labels:
            raise MissingLabel(gt, p.stem)
        samples.append(Sample(id=p.stem, path=p, label=labels[p.stem]))
    if not samples:
        raise DatasetError("no ILSVRC2012_val_*.JPEG files", file=images)
    return samples


def _ilsvrc_id_map(root: Path, spec: DatasetSpec, gt: Path) -> dict[int, int]:
    """1-based devkit ILSVRC2012_ID -> 0-999 index (rank of the wnid in sorted order)."""
    if not spec.synsets:
        raise DatasetError(
            "one-column ground truth holds devkit ILSVRC2012_IDs; set dataset.synsets to a TSV "
            "'ilsvrc2012_id<TAB>wnid' (from the devkit's meta.mat) to map them",
            file=gt,
            field="synsets",
        )
    path = root / spec.synsets
    if not path.is_file():
        raise DatasetError("synsets file does not exist", file=path)
    id_to_wnid: dict[int, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        cols = line.split()
        if not cols:
            continue
        if len(cols) < 2 or not re.fullmatch(r"n\d{8}", cols[1]):
            raise DatasetError("expected 'ilsvrc2012_id<TAB>wnid'", file=path, field=f"line {n}")
        id_to_wnid[_int(cols[0], path, n)] = cols[1]
    if sorted(id_to_wnid) != list(range(1, 1001)):
        raise DatasetError(f"needs ids 1..1000 exactly, found {len(id_to_wnid)}", file=path)
    rank = {w: i for i, w in enumerate(sorted(id_to_wnid.values()))}
    return {k: rank[w] for k, w in id_to_wnid.items()}


def _int(text: str, file: Path, line: int) -> int:
    try:
        return int(text)
    except ValueError:
        raise DatasetError(f"{text!r} is not an integer", file=file, field=f"line {line}") from None


def truth(samples: Sequence[Sample]) -> dict[str, int]:
    return {s.id: s.label for s in samples}
