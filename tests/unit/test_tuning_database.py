"""The tuning database file (packager/harness/tuningdb.py): what the TVM backend accepts and refuses.

A database may come from a stranger's artifact: every refusal is one ConfigError
(exit 2) whose line names the file and the rule; nothing reaches TVM before the
checks. No TVM needed here: these are the checks in front of it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from packager.harness.errors import ConfigError
from packager.harness.tuningdb import DB_FORMAT, MAX_DB_BYTES, read_database, with_cores, write_database


def _doc(**over) -> dict:
    doc = {
        "format": DB_FORMAT, "tvm": "0.27.0.post1", "target": '{"kind":"llvm","num-cores":2}', "model_sha256": "ab" * 32,
        "batch_sizes": [1], "trials": 8, "seed": 1, "cost_model": "random", "tuning_seconds": 12.5,
        "tuned_on": {"cpu_model": "AMD EPYC", "cores": 2, "platform": "linux/amd64", "machine": "x86_64"},
        "workloads": [["123", {"root_index": 1, "nodes": []}]], "records": [[0, [[], [0.001], {}, []]]],
    }
    doc.update(over)
    return doc


def _write(tmp_path: Path, doc) -> Path:
    path = tmp_path / "db.json"
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def test_a_written_database_reads_back_with_its_sha256_and_machine(tmp_path):
    sha = write_database(_doc(), tmp_path / "db.json")
    db = read_database(tmp_path / "db.json", tvm_version="0.27.0.post1", target='{"kind":"llvm","num-cores":2}',
                       model_sha256="ab" * 32)
    assert db.sha256 == sha and db.trials == 8 and db.seed == 1 and db.tuned_on["cores"] == 2
    assert f"sha256:{sha[:16]}" in db.describe() and "AMD EPYC" in db.describe() and "linux/amd64" in db.describe()
    # canonical bytes: the same content gives the same sha256
    assert write_database(json.loads((tmp_path / "db.json").read_text()), tmp_path / "again.json") == sha


def _refusal(tmp_path: Path, doc, **expect) -> str:
    path = _write(tmp_path, doc)
    with pytest.raises(ConfigError) as e:
        read_database(path, **expect)
    msg = str(e.value)
    assert msg.startswith(str(path)) and "\n" not in msg and e.value.return_code == 2, msg
    return msg


@pytest.mark.parametrize("doc, rule", [
    ("not json {", "not valid JSON"),
    ('{"a": NaN}', "not accepted JSON"),
    ('{"a": 1, "a": 2}', "not accepted JSON"),
    ("[1, 2]", "JSON object"),
    ("[" * 200 + "]" * 200, "nested"),
    (_doc(format="something/else"), "format is"),
    ({**_doc(), "extra": 1}, "unknown ['extra']"),
    ({k: v for k, v in _doc().items() if k != "seed"}, "missing ['seed']"),
    (_doc(trials=-1), "trials must be"),
    (_doc(seed=True), "seed must be"),
    (_doc(batch_sizes=[]), "batch_sizes"),
    (_doc(tuned_on={"cores": 2}), "tuned_on"),
    (_doc(tuned_on={"cpu_model": 1, "cores": 2, "platform": "x", "machine": "y"}), "tuned_on"),
    (_doc(workloads=[["123"]]), "workloads[0]"),
    (_doc(records=[[5, []]]), "records[0]"),
    (_doc(records=[[0, "x"]]), "records[0]"),
    (_doc(tvm=""), "tvm must be"),
])
def test_malformed_databases_are_refused_in_one_line(tmp_path, doc, rule):
    assert rule in _refusal(tmp_path, doc)


@pytest.mark.parametrize("key, want", [("tvm_version", "0.28.0"), ("target", '{"kind":"llvm"}'), ("model_sha256", "cd" * 32)])
def test_a_database_for_another_tvm_target_or_model_is_refused(tmp_path, key, want):
    msg = _refusal(tmp_path, _doc(), **{key: want})
    assert "made for" in msg and want[:20] in msg


def test_hostile_files_are_refused_before_reading(tmp_path):
    big = tmp_path / "big.json"
    with big.open("wb") as f:
        f.truncate(MAX_DB_BYTES + 1)  # sparse: the size check must come before any read
    with pytest.raises(ConfigError, match="big.json"):
        read_database(big)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="fifo.json"):
        read_database(fifo)  # a FIFO would block a reader for ever
    link = tmp_path / "link.json"
    link.symlink_to(_write(tmp_path, _doc()))
    with pytest.raises(ConfigError, match="link.json"):
        read_database(link)
    with pytest.raises(ConfigError, match="missing.json"):
        read_database(tmp_path / "missing.json")
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(_doc()).encode())
    with pytest.raises(ConfigError, match="bom.json"):
        read_database(tmp_path / "bom.json")


def test_the_tuned_target_names_the_cores_it_was_tuned_for():
    assert with_cores({"kind": "llvm"}, 4) == {"kind": "llvm", "num-cores": 4}
    assert with_cores("llvm", 2) == {"kind": "llvm", "num-cores": 2}
    assert with_cores({"kind": "llvm", "num-cores": 8}, 2) == {"kind": "llvm", "num-cores": 8}


def test_frames_of_the_frozen_import_machinery_map_to_the_modules_they_are():
    """What harness/tune tells ``inspect`` before MetaSchedule imports its intrinsics is true, not a shortcut:
    the frozen importlib modules' code carries exactly those file names."""
    import importlib._bootstrap
    import importlib._bootstrap_external
    import inspect
    import sys

    from packager.harness.tune import frozen_frames_known

    frozen_frames_known()
    for module in (importlib._bootstrap, importlib._bootstrap_external):
        name = module.__name__
        assert module.__spec__.origin == "frozen"
        code = next(v.__code__ for v in vars(module).values() if inspect.isfunction(v))
        assert code.co_filename == f"<frozen {name}>"
        assert inspect.getmodule(code, code.co_filename) is sys.modules[name] is module
