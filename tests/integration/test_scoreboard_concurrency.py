"""8 processes publishing 100 bundles each leave exactly 800 rows: on SQLite and on a real PostgreSQL.

Every process is the real console script, ``request-pack publish``, verifying
real signed bundles. Each process also publishes 25 of its neighbour's bundles,
interleaved with its own so both processes reach the same digest at about the
same time: the database must then insert it once, and the two processes'
reports must add up to exactly 800 new and 200 already present.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import synthetic_results as synthetic
from runner_helpers import free_port

from packager.bundle.keys import generate_keypair
from packager.scoreboard.store import SCHEMA_VERSION, Board

PROCESSES = 8
PER_PROCESS = 100
OVERLAP = 25

_SCRIPT = Path(sys.executable).parent / "request-pack"
BASE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "packager.cli"]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    """800 small signed bundles (5 predictions each) and the public key that trusts them."""
    d = tmp_path_factory.mktemp("bundles")
    kp = generate_keypair(d / "keys", "author")
    start = time.perf_counter()
    specs = synthetic.spread(PROCESSES * PER_PROCESS, seed=42, samples=5)
    out = [synthetic.make_bundle(d / f"b{i:04d}", s, kp.private_path) for i, s in enumerate(specs)]
    print(f"\nsigned {len(out)} bundles in {time.perf_counter() - start:.1f} s")
    return out, kp.public_path


def _plan(bundles: list[Path]) -> list[list[Path]]:
    chunks = [bundles[i * PER_PROCESS : (i + 1) * PER_PROCESS] for i in range(PROCESSES)]
    plans = []
    for i in range(PROCESSES):
        mine, theirs = chunks[i], chunks[(i + 1) % PROCESSES][:OVERLAP]
        interleaved = [b for pair in zip(mine[:OVERLAP], theirs) for b in pair]
        plans.append(interleaved + mine[OVERLAP:])
    return plans


def _publish_concurrently(url: str, bundles: list[Path], trust: Path, tmp: Path) -> tuple[int, int, float]:
    procs = []
    start = time.perf_counter()
    for plan in _plan(bundles):
        procs.append(
            subprocess.Popen(
                [*BASE, "publish", *map(str, plan), "--board", url, "--trust", str(trust)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "COLUMNS": "200"},
            )
        )
    new = present = 0
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        m = re.search(r"(\d+) new, (\d+) already present", out)
        assert m, out[-500:]
        new += int(m.group(1))
        present += int(m.group(2))
    return new, present, time.perf_counter() - start


def _check_board(url: str, bundles: list[Path], trust: Path, tmp: Path) -> None:
    new, present, seconds = _publish_concurrently(url, bundles, trust, tmp)
    attempts = PROCESSES * (PER_PROCESS + OVERLAP)
    print(f"\n{url.split(':')[0]}: {attempts} publish attempts by {PROCESSES} processes in {seconds:.1f} s ({attempts / seconds:.0f} bundles/s incl. verification and process start)")
    assert (new, present) == (PROCESSES * PER_PROCESS, PROCESSES * OVERLAP)
    with Board(url) as b:
        assert b.count() == PROCESSES * PER_PROCESS
        with b.engine.connect() as conn:
            distinct = conn.execute(sa.text("SELECT COUNT(DISTINCT bundle_digest) FROM results")).scalar()
            versions = conn.execute(sa.text("SELECT COUNT(*) FROM board_schema")).scalar()
        assert distinct == PROCESSES * PER_PROCESS
        assert versions == SCHEMA_VERSION  # eight concurrent migrators applied each migration once
    # Publishing again changes nothing.
    r = subprocess.run([*BASE, "publish", *map(str, bundles[:50]), "--board", url, "--trust", str(trust)], capture_output=True, text=True)
    assert r.returncode == 0 and "0 new, 50 already present" in r.stdout, r.stderr
    with Board(url) as b:
        assert b.count() == PROCESSES * PER_PROCESS


def test_sqlite_eight_publishers(bundles, tmp_path: Path) -> None:
    paths, trust = bundles
    _check_board(f"sqlite:///{tmp_path / 'board.db'}", paths, trust, tmp_path)


# --- a throwaway PostgreSQL server from Debian's package --------------------------------


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    pytest.fail("PostgreSQL server binaries not found (apt-get install postgresql)")


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 and a free port; yields an admin URL without a database.

    initdb refuses to run as root, so as root the server runs as the
    ``postgres`` user (created by Debian's package) in a directory it owns.
    fsync is off: a test server's data need not survive a crash.
    """
    bindir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="request-pack-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log = root / "data", root / "server.log"
    port = free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=60"
    start = time.perf_counter()
    r = subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60", "start"], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"pg_ctl start failed: {r.stderr}\n{log.read_text() if log.exists() else ''}")
    print(f"\nPostgreSQL ({bindir.parent.name}) up on 127.0.0.1:{port} in {time.perf_counter() - start:.1f} s")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _create_database(admin_url: str, name: str) -> str:
    engine = sa.create_engine(f"{admin_url.replace('postgresql://', 'postgresql+psycopg://')}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return f"{admin_url}/{name}"


@pytest.mark.database
def test_postgresql_eight_publishers(postgres: str, bundles, tmp_path: Path) -> None:
    paths, trust = bundles
    url = _create_database(postgres, "board_concurrency")
    _check_board(url, paths, trust, tmp_path)


@pytest.mark.database
def test_postgresql_server_version_and_roundtrip(postgres: str, bundles) -> None:
    paths, trust_key = bundles
    from packager.bundle.keys import TrustStore
    from packager.scoreboard.publish import publish
    from packager.scoreboard.web import board_view

    url = _create_database(postgres, "board_roundtrip")
    with Board(url) as b:
        with b.engine.connect() as conn:
            version = conn.execute(sa.text("SHOW server_version")).scalar()
        assert int(str(version).split(".")[0]) >= 15
        trust = TrustStore.load([trust_key])
        first = publish(paths[0], b, trust)
        assert first.inserted and not publish(paths[0], b, trust).inserted
        row, detail = b.get(first.bundle_digest)
        assert row == first.row.__class__(**{**first.row.to_json(), "published_at": row.published_at})
        assert detail["signer"]["keyid"] == row.key_id
        view = board_view(b)
        assert [r.bundle_digest for r in view.rows] == [first.bundle_digest] and view.frontier.front == (first.bundle_digest,)
