"""Every hostile input of ``_hostile.py`` is refused cleanly by ``verify``, ``publish`` and ``validate``.

For each case: the exit code of its class (2 bad input, 10-16 verify), one line
naming the file and the rule, no traceback (the error is a ``RequestPackError``,
the only kind the CLI turns into one line), nothing written outside the target
(canary files around it stay as they were), and no row on a real SQLite board.
Every case runs in-process (fast); at least one case per class, and the four
that were once accepted, also run through the real ``request-pack`` console
script. The untouched bundle still verifies and publishes.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from _bundle_fixture import make_result_dir
from _hostile import CASES, Case, Genuine

from packager.bundle.keys import TrustStore, generate_keypair
from packager.bundle.sign import sign_result_dir
from packager.bundle.verify import verify_bundle
from packager.errors import RequestPackError
from packager.manifest import load_manifest
from packager.scoreboard.publish import publish
from packager.scoreboard.store import Board

_SCRIPT = Path(sys.executable).parent / "request-pack"
BASE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "packager.cli"]
BY_NAME = {c.name: c for c in CASES}
# Through the CLI: the four cases accepted before (trailing gzip data, a huge pax
# header, a UTF-16 envelope, +-Infinity in signed metrics), then one or more per class.
CLI_CASES = [
    "gzip-trailing-second-gzip-member", "pax-header-300MiB-declared", "envelope-utf16-le-bom[archive]",
    "payload-infinity[dir]", "payload-minus-infinity[archive]",
    "gzip-bomb-plain", "tar-trailing-member-after-eof", "200000-tiny-members", "member-symlink-out",
    "name-300-byte-name", "name-deep-path", "name-case-collision", "dir-name-nfd", "subject-dot-dot[dir]",
    "predictions-sparse-3GiB[dir]", "envelope-symlink-dev-zero", "envelope-fifo", "signed-metrics-nested[dir]",
    "signed-predictions-long-line[archive]", "manifest-symlink-outside", "manifest-symlink-dev-zero", "manifest-fifo",
    "manifest-nested-flow",
]


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> Genuine:
    d = tmp_path_factory.mktemp("genuine")
    pair = generate_keypair(d / "keys")
    result = make_result_dir(d / "bundle", n=40)
    sign_result_dir(result, pair.private_path)
    os.chmod(result, 0o555)  # the template itself is never touched by a case
    return Genuine(result, pair.private_path, pair.public_path)


def _snapshot(root: Path, skip: set[str]) -> dict[str, tuple[int, bytes]]:
    """Every path below root (but ``skip``) with its mode and, for regular files, its bytes."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir.parts and rel_dir.parts[0] in skip:
            continue
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if rel.split("/")[0] in skip:
                continue
            st = p.lstat()
            out[rel] = (st.st_mode, p.read_bytes() if p.is_file() and not p.is_symlink() else b"")
    return out


def _rows(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as c:
        return c.execute("SELECT count(*) FROM results").fetchone()[0]


def _refusal(e: BaseException, case: Case) -> str:
    assert isinstance(e, RequestPackError), f"{case.name}: {type(e).__name__} would be a traceback: {e}"
    text = str(e)
    assert e.return_code == case.code, f"{case.name}: exit {e.return_code}, expected {case.code}: {text}"
    assert case.message in text, f"{case.name}: {text!r} lacks {case.message!r}"
    assert "\n" not in text and "\r" not in text, f"{case.name}: not one line: {text!r}"
    return text


def test_the_generator_covers_every_class_with_100_cases_or_more() -> None:
    assert len(CASES) >= 100 and len(BY_NAME) == len(CASES)
    groups = Counter(c.group for c in CASES)
    assert set(groups) == {"archive-stream", "headers", "names", "envelope", "payload", "files", "sizes", "manifest"}
    assert min(groups.values()) >= 5, groups
    assert {c.form for c in CASES} == {"dir", "archive", "manifest"}
    assert {BY_NAME[n].group for n in CLI_CASES} == set(groups)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_refused_in_process(case: Case, genuine: Genuine, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "canary.txt").write_text("canary\n")
    (tmp_path / "canary-dir").mkdir()
    target = case.make(genuine, work)
    before = _snapshot(tmp_path, {"work", "board"})
    trust = TrustStore.load([genuine.pub])
    if case.form == "manifest":
        with pytest.raises(Exception) as e:
            load_manifest(target)
        _refusal(e.value, case)
    else:
        with pytest.raises(Exception) as e:
            verify_bundle(target, trust)
        _refusal(e.value, case)
        db = tmp_path / "board" / "board.db"
        db.parent.mkdir()
        with Board(f"sqlite:///{db}") as board, pytest.raises(Exception) as p:
            publish(target, board, trust)
        _refusal(p.value, case)
        assert _rows(db) == 0
    assert _snapshot(tmp_path, {"work", "board"}) == before
    assert not Path("/tmp/request-pack-hostile-evil").exists()


def _cli(args: list[object], tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BASE, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=tmp, check=False,
                          env={**os.environ, "COLUMNS": "200", "TMPDIR": str(tmp)})


def _one_line(r: subprocess.CompletedProcess[str], case: Case, command: str) -> None:
    assert r.returncode == case.code, f"{command} {case.name}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and case.message in errors[0], r.stderr
    # Besides the one error line, stderr holds only log records (the board's migrations, say).
    others = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith(("error:", "INFO ", "WARNING "))]
    assert others == [], r.stderr


@pytest.mark.parametrize("name", CLI_CASES)
def test_refused_by_the_cli(name: str, genuine: Genuine, tmp_path: Path) -> None:
    case = BY_NAME[name]
    work, tmp = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    (tmp_path / "canary.txt").write_text("canary\n")
    target = case.make(genuine, work)
    before = _snapshot(tmp_path, {"work", "board", "tmp"})
    if case.form == "manifest":
        _one_line(_cli(["validate", target], tmp), case, "validate")
    else:
        db = tmp_path / "board" / "board.db"
        db.parent.mkdir()
        with ThreadPoolExecutor(2) as pool:  # two processes at once: the suite stays fast
            verify = pool.submit(_cli, ["verify", target, "--trust", genuine.pub], tmp)
            publish = pool.submit(_cli, ["publish", target, "--board", f"sqlite:///{db}", "--trust", genuine.pub], tmp)
            _one_line(verify.result(), case, "verify")
            _one_line(publish.result(), case, "publish")
        assert not db.exists()  # a refused bundle does not even open the board
    assert _snapshot(tmp_path, {"work", "board", "tmp"}) == before
    assert list(tmp.iterdir()) == []  # the private unpack directory is gone


@pytest.mark.parametrize("form", ["dir", "archive"])
def test_the_untouched_bundle_still_verifies_and_publishes(form: str, genuine: Genuine, tmp_path: Path) -> None:
    from _hostile import gz, tar_of

    target = genuine.dir if form == "dir" else tmp_path / "bundle.tar.gz"
    if form == "archive":
        target.write_bytes(gz(tar_of(genuine.dir)))
    r = _cli(["verify", target, "--trust", genuine.pub], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verified in" in r.stdout
    db = tmp_path / "board" / "board.db"
    db.parent.mkdir()
    r = _cli(["publish", target, "--board", f"sqlite:///{db}", "--trust", genuine.pub], tmp_path)
    assert r.returncode == 0 and "1 new" in r.stdout, r.stdout + r.stderr
    assert _rows(db) == 1
