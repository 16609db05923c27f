"""Ground truth for recomputing accuracy: the two label formats a bundle or a user hands the verifier.

Only the file formats live here; reading a whole dataset directory (images
and all) is the harness's ``dataset`` module, which the verifier calls for
``--dataset``.
"""

from __future__ import annotations

import re
from pathlib import Path

from packager import wire

_VAL_LINE = re.compile(r"^(ILSVRC2012_val_\d{8})\.(?:JPEG|jpeg|jpg|JPG)\s+(\d+)$")


# A labels file of ImageNet's 50,000 validation images is ~2.6 MB (TSV) or ~1.5 MB (val.txt).
MAX_LABELS_BYTES = 32 << 20
MAX_LABELS = 200_000
MAX_LINE_BYTES = 4096


class LabelsError(ValueError):
    """A labels file is malformed or over a cap; the message names the line."""


def read_labels(path: Path, *, max_rows: int = MAX_LABELS, limit: int = MAX_LABELS_BYTES) -> dict[str, int]:
    """id -> class index from a labels TSV with a header (file, wnid, class_index, class_name),
    or from an ILSVRC2012 ``val.txt`` (``ILSVRC2012_val_NNNNNNNN.JPEG <index>``, ids are the stems).

    Read line by line from a regular file (never a FIFO or symlink) of at most
    ``limit`` bytes, with at most ``max_rows`` rows; raises :class:`LabelsError` (a ValueError).
    """
    truth: dict[str, int] = {}
    lines = (_text(line, n) for n, line in enumerate(
        wire.iter_lines(path, limit, max_line=MAX_LINE_BYTES, error=LabelsError, shown=path.name), start=1))
    first = next(lines, "")
    if _VAL_LINE.match(first.strip()):
        _val_row(truth, first, 1)
        for lineno, line in enumerate(lines, start=2):
            _val_row(truth, line, lineno)
            _count(truth, max_rows, lineno)
        return truth
    header = first.rstrip("\r").split("\t")
    if "file" not in header or "class_index" not in header:
        raise LabelsError(f"header {header[:8]!r} lacks 'file' and 'class_index' columns")
    fi, ci = header.index("file"), header.index("class_index")
    for lineno, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        cols = line.rstrip("\r").split("\t")
        try:
            file, index = cols[fi], int(cols[ci])
        except (IndexError, ValueError) as e:
            raise LabelsError(f"line {lineno}: {e}") from None
        if file in truth:
            raise LabelsError(f"line {lineno}: duplicate file {file!r}")
        truth[file] = index
        _count(truth, max_rows, lineno)
    return truth


def _text(line: bytes, lineno: int) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LabelsError(f"line {lineno}: not UTF-8 (byte {e.start})") from None


def _val_row(truth: dict[str, int], line: str, lineno: int) -> None:
    if not line.strip():
        return
    m = _VAL_LINE.match(line.strip())
    if not m:
        raise LabelsError(f"line {lineno}: expected 'ILSVRC2012_val_NNNNNNNN.JPEG <class_index>'")
    if m.group(1) in truth:
        raise LabelsError(f"line {lineno}: duplicate id {m.group(1)!r}")
    truth[m.group(1)] = int(m.group(2))


def _count(truth: dict[str, int], max_rows: int, lineno: int) -> None:
    if len(truth) > max_rows:
        raise LabelsError(f"line {lineno}: more than {max_rows} labels")
