"""Ground truth for recomputing accuracy: the two label formats a bundle or a user hands the verifier.

Only the file formats live here; reading a whole dataset directory (images
and all) is the harness's ``dataset`` module, which the verifier calls for
``--dataset``.
"""

from __future__ import annotations

import re
from pathlib import Path

_VAL_LINE = re.compile(r"^(ILSVRC2012_val_\d{8})\.(?:JPEG|jpeg|jpg|JPG)\s+(\d+)$")


def read_labels(path: Path) -> dict[str, int]:
    """id -> class index from a labels TSV with a header (file, wnid, class_index, class_name),
    or from an ILSVRC2012 ``val.txt`` (``ILSVRC2012_val_NNNNNNNN.JPEG <index>``, ids are the stems)."""
    truth: dict[str, int] = {}
    with path.open("r", encoding="utf-8") as f:
        first = f.readline()
        if _VAL_LINE.match(first.strip()):
            for lineno, line in enumerate([first, *f], start=1):
                if not line.strip():
                    continue
                m = _VAL_LINE.match(line.strip())
                if not m:
                    raise ValueError(f"line {lineno}: expected 'ILSVRC2012_val_NNNNNNNN.JPEG <class_index>'")
                if m.group(1) in truth:
                    raise ValueError(f"line {lineno}: duplicate id {m.group(1)!r}")
                truth[m.group(1)] = int(m.group(2))
            return truth
        header = first.rstrip("\n").split("\t")
        if "file" not in header or "class_index" not in header:
            raise ValueError(f"header {header!r} lacks 'file' and 'class_index' columns")
        fi, ci = header.index("file"), header.index("class_index")
        for lineno, line in enumerate(f, start=2):
            if not line.strip():
                continue
            cols = line.rstrip("\n").split("\t")
            try:
                file, index = cols[fi], int(cols[ci])
            except (IndexError, ValueError) as e:
                raise ValueError(f"line {lineno}: {e}") from e
            if file in truth:
                raise ValueError(f"line {lineno}: duplicate file {file!r}")
            truth[file] = index
    return truth
