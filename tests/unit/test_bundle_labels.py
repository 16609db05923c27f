"""Ground-truth formats the verifier reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from _bundle_fixture import SAMPLE_LABELS as SAMPLE

from packager.bundle.labels import read_labels


def test_the_shared_sample_reads_as_file_to_index() -> None:
    truth = read_labels(SAMPLE)
    assert len(truth) == 200
    assert truth["n01440764_tench.JPEG"] == 0 and truth["n01496331_electric_ray.JPEG"] == 5


def test_val_txt_uses_stems(tmp_path: Path) -> None:
    (tmp_path / "val.txt").write_text("ILSVRC2012_val_00000001.JPEG 65\nILSVRC2012_val_00000002.JPEG 970\n\n")
    assert read_labels(tmp_path / "val.txt") == {"ILSVRC2012_val_00000001": 65, "ILSVRC2012_val_00000002": 970}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name\tindex\na\t1\n", "lacks 'file' and 'class_index' columns"),
        ("file\tclass_index\na\tone\n", "line 2: invalid literal"),
        ("file\tclass_index\na\n", "line 2: list index out of range"),
        ("file\tclass_index\na\t1\na\t2\n", "line 3: duplicate file 'a'"),
        ("ILSVRC2012_val_00000001.JPEG 1\nILSVRC2012_val_00000001.JPEG 2\n", "line 2: duplicate id"),
        ("ILSVRC2012_val_00000001.JPEG 1\nsomething else\n", "line 2: expected 'ILSVRC2012_val_NNNNNNNN.JPEG <class_index>'"),
    ],
    ids=["no-header", "not-an-int", "short-row", "duplicate-file", "duplicate-val-id", "mixed-val"],
)
def test_malformed_labels(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "labels").write_text(text)
    with pytest.raises(ValueError) as info:
        read_labels(tmp_path / "labels")
    assert message in str(info.value)
