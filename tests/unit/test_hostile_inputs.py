"""Every hostile ``--from`` source of ``_hostile_inputs.py`` is refused cleanly by fetch and reproduce's restore.

For each case, the readers it names (``fetch ARTIFACT --from``; the restore steps of
``reproduce BUNDLE --from``: ``read_index``, ``restore_artifact``, ``restore_sources``)
raise a ``RequestPackError`` (one line: the only kind the CLI prints without a
traceback) with the case's exit code and message; nothing is written outside the
target (canaries around it stay as they were); the cache holds no object of the
archive unless it was a genuine one read before a tampered one; every case runs
in-process in seconds, a few through the real ``request-pack fetch``. The untouched
archive still fills an empty cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from _hostile_inputs import CASES, Case, GenuineArchive, read_members
from test_archive import make_artifact

from packager.cache import Cache
from packager.errors import RequestPackError
from packager.inputs import archive
from packager.inputs.lock import fetch
from packager.reproduce import plan_archive, write_archive

_SCRIPT = Path(sys.executable).parent / "request-pack"
BASE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "packager.cli"]
BY_NAME = {c.name: c for c in CASES}
CLI_CASES = ["gzip-compressed", "pax-header-300MiB", "member-symlink-out", "name-dot-dot", "index-nested",
             "index-size-lies", "tampered-deb", "dir-debs-fifo", "from-fifo", "second-top-directory"]


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> GenuineArchive:
    d = tmp_path_factory.mktemp("genuine")
    art, cache = make_artifact(d)
    written = write_archive(plan_archive(art, cache), d / "inputs.tar")
    os.chmod(written.path, 0o444)
    members = read_members(written.path)
    return GenuineArchive(art, written.path, members[0][0].name.split("/")[0], members)


def _snapshot(root: Path, skip: set[str]) -> dict[str, tuple[int, bytes]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if rel.split("/")[0] in skip:
                continue
            st = p.lstat()
            out[rel] = (st.st_mode, p.read_bytes() if p.is_file() and not p.is_symlink() else b"")
    return out


def _refusal(e: BaseException, case: Case, op: str) -> None:
    assert isinstance(e, RequestPackError), f"{case.name} ({op}): {type(e).__name__} would be a traceback: {e}"
    text = str(e)
    assert e.return_code == case.code, f"{case.name} ({op}): exit {e.return_code}, expected {case.code}: {text}"
    assert case.message in text, f"{case.name} ({op}): {text!r} lacks {case.message!r}"
    assert "\n" not in text and "\r" not in text and len(text) < 2000, f"{case.name} ({op}): not one short line: {text[:300]!r}"


def _restore(target: Path, out: Path) -> None:
    """What reproduce does with the archive before building (steps 3-4)."""
    archive.read_index(target)
    archive.restore_artifact(target, out / "artifact")
    archive.restore_sources(target, out / "source")


def test_the_generator_covers_every_class() -> None:
    assert len(CASES) >= 100 and len(BY_NAME) == len(CASES)
    groups = Counter(c.group for c in CASES)
    assert set(groups) == {"stream", "headers", "members", "names", "index", "tampered", "loose"}
    assert min(groups.values()) >= 5, groups
    assert {c.code for c in CASES} == {1, 2, 16}
    assert {BY_NAME[n].group for n in CLI_CASES} == set(groups)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_refused_in_process(case: Case, genuine: GenuineArchive, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "canary.txt").write_text("canary\n")
    (tmp_path / "canary-dir").mkdir()
    target = case.make(genuine, work)
    before = _snapshot(tmp_path, {"work", "cache", "restore"})
    shas = {e["sha256"] for e in archive.read_index(genuine.tar)["entries"]}
    if "fetch" in case.ops:
        cache = Cache.open(tmp_path / "cache")
        with pytest.raises(Exception) as e:
            fetch(genuine.art, target, cache=cache)
        _refusal(e.value, case, "fetch")
        if case.code != 1:  # refused before anything was stored
            assert not [s for s in shas if cache.has(s)], case.name
    if "restore" in case.ops:
        with pytest.raises(Exception) as e:
            _restore(target, tmp_path / "restore")
        _refusal(e.value, case, "restore")
    assert _snapshot(tmp_path, {"work", "cache", "restore"}) == before
    restored = tmp_path / "restore"
    if restored.exists():  # only regular files and directories, all below it
        assert all(p.is_dir() or (p.is_file() and not p.is_symlink()) for p in restored.rglob("*"))


def test_the_untouched_archive_fills_an_empty_cache_and_restores(genuine: GenuineArchive, tmp_path: Path) -> None:
    assert fetch(genuine.art, genuine.tar, cache=Cache.open(tmp_path / "cache")).frozen
    _restore(genuine.tar, tmp_path / "restore")
    assert (tmp_path / "restore" / "source" / "packager" / "__init__.py").is_file()


def _cli(args: list[object], tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BASE, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=tmp, check=False,
                          env={**os.environ, "COLUMNS": "200", "TMPDIR": str(tmp)})


@pytest.mark.parametrize("name", CLI_CASES)
def test_refused_by_the_cli(name: str, genuine: GenuineArchive, tmp_path: Path) -> None:
    case = BY_NAME[name]
    work = tmp_path / "work"
    work.mkdir()
    target = case.make(genuine, work)
    r = _cli(["fetch", genuine.art, "--from", target, "--cache", tmp_path / "cache"], tmp_path)
    assert r.returncode == case.code, f"{name}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and case.message in errors[0], r.stderr
    others = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith(("error:", "INFO ", "WARNING "))]
    assert others == [], r.stderr
