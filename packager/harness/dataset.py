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
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
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
