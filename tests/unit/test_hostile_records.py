"""Every hostile reproduce record of ``_hostile_records.py`` is refused cleanly by ``board add-reproduction``.

For each case: ``reproduction.verify_file`` and ``rebuilds.add_reproduction`` on a real
SQLite board raise a ``RequestPackError`` (one line, the case's exit code and message);
no row is stored; nothing around the record changes. A few run through the real
``request-pack board add-reproduction``, which refuses before it opens the board.
The genuine record is still stored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from _hostile_records import CASES, Case, GenuineRecord

from packager.bundle import reproduction
from packager.bundle.keys import TrustStore, generate_keypair, load_private_key
from packager.errors import RequestPackError
from packager.reproduce import Reproduced, reproduction_statement
from packager.scoreboard.rebuilds import add_reproduction
from packager.scoreboard.store import Board

_SCRIPT = Path(sys.executable).parent / "request-pack"
BASE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "packager.cli"]
BY_NAME = {c.name: c for c in CASES}
CLI_CASES = ["file-fifo", "envelope-nested-100000", "envelope-17-signatures-one-valid", "sig-by-a-stranger",
             "sig-stranger-signs-a-json-bomb", "statement-builder-value-1MiB", "statement-subjects-disagree"]


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> GenuineRecord:
    d = tmp_path_factory.mktemp("genuine")
    trusted, stranger = generate_keypair(d / "keys", "evaluator"), generate_keypair(d / "keys", "stranger")
    result = Reproduced(expected="sha256:" + "1" * 64, actual="sha256:" + "1" * 64, platforms=("linux/amd64",), seconds=12.0,
                        harness="archive", differing=(), lock_sha256="2" * 64, archive_sha256="3" * 64,
                        bundle_digest="sha256:" + "4" * 64, bundle_signer="5" * 64, artifact="resnet50-ort")
    st = reproduction_statement(result)
    rec = d / "genuine.reproduced.dsse.json"
    rec.write_text(reproduction.sign(st, load_private_key(trusted.private_path)).to_json())
    os.chmod(rec, 0o444)
    return GenuineRecord(rec, trusted.private_path, stranger.private_path, trusted.public_path, json.loads(st.to_payload()))


def _snapshot(root: Path, skip: set[str]) -> dict[str, tuple[int, bytes]]:
    out = {}
    for p in sorted(p for p in root.iterdir() if p.name not in skip):
        rel = p.relative_to(root).as_posix()
        st = p.lstat()
        out[rel] = (st.st_mode, p.read_bytes() if p.is_file() and not p.is_symlink() else b"")
    return out


def _refusal(e: BaseException, case: Case) -> None:
    assert isinstance(e, RequestPackError), f"{case.name}: {type(e).__name__} would be a traceback: {e}"
    text = str(e)
    assert e.return_code == case.code, f"{case.name}: exit {e.return_code}, expected {case.code}: {text}"
    assert case.message in text, f"{case.name}: {text!r} lacks {case.message!r}"
    assert "\n" not in text and "\r" not in text and len(text) < 2000, f"{case.name}: not one short line: {text[:300]!r}"


def test_the_generator_covers_every_class() -> None:
    assert len(CASES) >= 80 and len(BY_NAME) == len(CASES)
    groups = Counter(c.group for c in CASES)
    assert set(groups) == {"file", "envelope", "signature", "statement"} and min(groups.values()) >= 5, groups
    assert {BY_NAME[n].group for n in CLI_CASES} == set(groups)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_refused_in_process(case: Case, genuine: GenuineRecord, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "canary.txt").write_text("canary\n")
    record = case.make(genuine, work)
    before = _snapshot(tmp_path, {"board", "work"})
    trust = TrustStore.load([genuine.pub])
    with pytest.raises(Exception) as e:
        reproduction.verify_file(record, trust)
    _refusal(e.value, case)
    (tmp_path / "board").mkdir()
    with Board(f"sqlite:///{tmp_path / 'board' / 'board.db'}") as board:
        with pytest.raises(Exception) as e:
            add_reproduction(record, board, trust)
        _refusal(e.value, case)
        assert board.reproductions() == []
    assert _snapshot(tmp_path, {"board", "work"}) == before


def _cli(args: list[object], tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BASE, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=tmp, check=False,
                          env={**os.environ, "COLUMNS": "200", "TMPDIR": str(tmp)})


@pytest.mark.parametrize("name", CLI_CASES)
def test_refused_by_the_cli(name: str, genuine: GenuineRecord, tmp_path: Path) -> None:
    case = BY_NAME[name]
    (tmp_path / "work").mkdir()
    record = case.make(genuine, tmp_path / "work")
    db = tmp_path / "board.db"
    r = _cli(["board", "add-reproduction", record, "--board", f"sqlite:///{db}", "--trust", genuine.pub], tmp_path)
    assert r.returncode == case.code, f"{name}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and case.message in errors[0], r.stderr
    assert not db.exists()  # refused before the board is opened


def test_the_genuine_record_is_stored(genuine: GenuineRecord, tmp_path: Path) -> None:
    db = tmp_path / "board.db"
    r = _cli(["board", "add-reproduction", genuine.file, "--board", f"sqlite:///{db}", "--trust", genuine.pub], tmp_path)
    assert r.returncode == 0 and "stored" in r.stdout, r.stdout + r.stderr
    with Board(f"sqlite:///{db}") as board:
        assert len(board.reproductions()) == 1
