"""``reproduce`` on a real bundle: evaluate, archive, then rebuild the bundle's image offline from another checkout.

``evaluate`` makes a signed functional-stage bundle of the example artifact (amd64,
the shared 200-image sample); ``archive`` writes its inputs and request-pack's own
harness source. Then, from a *different checkout* (a copy of ``packager/`` whose
harness differs by one line, so its own harness layer would not match), in a fresh
cache and a network namespace with no interface but a downed loopback (``unshare -n``),
``reproduce BUNDLE --from ARCHIVE --trust KEY --nix --sign KEY`` must report the bundle's index
digest from ``request-pack build`` and from the Nix derivation (where GNU tar writes the file
layers and Nix the JSON documents a second time), and write a signed record that verifies.

As in test_archive_offline, only the base root filesystems (products keyed by the
locked .debs' sha256s, not inputs) are shared from the warm cache: made afresh they
cost over a minute per platform, and the suite has a 45-minute budget.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from runner_helpers import cli

from packager.cache import Cache, sha256_file

pytestmark = [pytest.mark.docker, pytest.mark.nix, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = REPO / "artifacts" / "efficientnet-lite0"


def _other_checkout(dest: Path) -> Path:
    """A checkout whose harness differs from this one's: the image it would build itself has another harness layer."""
    for part in ("packager", "dockerfiles", "nix"):
        shutil.copytree(REPO / part, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
    main = dest / "packager" / "harness" / "__main__.py"
    main.write_text(main.read_text() + "# a later request-pack: this line is not in the archived harness\n")
    return dest


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs unshare -n (root)")
def test_reproduce_a_real_bundle_offline_from_another_checkout(shared_sample: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert cli("keygen", "--out", str(keys), cwd=REPO).returncode == 0
    out = tmp_path / "results"
    ev = cli("evaluate", str(ARTIFACT), "--stage", "functional", "--dataset", str(shared_sample), "--out", str(out),
             "--build-root", str(tmp_path / "build"), "--key", str(keys / "signing.key"), cwd=REPO)
    assert ev.returncode == 0, (ev.stdout + ev.stderr)[-3000:]
    bundle = out / f"{ARTIFACT.name}-linux-amd64-functional.bundle.tar.gz"
    expected = json.loads((tmp_path / "build" / ARTIFACT.name / "build-record.json").read_text())["index_digest"]
    archive = tmp_path / "inputs.tar"
    made = cli("archive", str(ARTIFACT), "--out", str(archive), cwd=REPO)
    assert made.returncode == 0, made.stderr[-2000:]

    other = _other_checkout(tmp_path / "other")
    work = tmp_path / "work"
    (work / "cache").mkdir(parents=True)
    # hard links, not a symlink: the Nix expression pins files inside the cache it is given
    shutil.copytree(Cache.open(None).subdir("rootfs"), work / "cache" / "rootfs", copy_function=os.link)
    record = tmp_path / "reproduced.dsse.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(["unshare", "-n", sys.executable, "-m", "packager.cli", "reproduce", str(bundle),
                          "--from", str(archive), "--trust", str(keys / "signing.pub"), "--keep", str(work),
                          "--nix", "--sign", str(keys / "signing.key"), "--record", str(record)],
                         cwd=other, env={**env, "COLUMNS": "400"}, capture_output=True, text=True)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert f"bundle {expected}" in res.stdout and f"rebuilt {expected}" in res.stdout
    assert "harness from the archive" in res.stdout and "reproduced" in res.stdout
    # the second implementation, from the same archive: the Nix derivation (GNU tar, Nix's JSON) gives it too
    assert f"nix     {expected}" in res.stdout
    # the rebuild ran the other checkout's code, with the archive's harness, not this checkout's files
    plan = json.loads((work / "build" / ARTIFACT.name / "plan.json").read_text())
    harness = next(layer for layer in plan["platforms"][0]["layers"] if layer["role"] == "harness")
    assert all(src.startswith(str(work / "cache" / "request-pack-source")) for src, _, _ in harness["files"])

    from packager.bundle import reproduction
    from packager.bundle.keys import TrustStore

    shown = reproduction.verify_file(record, TrustStore.load([keys / "signing.pub"]))
    assert shown.index_digest == shown.rebuilt_digest == expected and shown.matches
    assert shown.predicate.harness == "archive" and shown.predicate.archive.sha256 == sha256_file(archive)
    assert shown.predicate.nix_index_digest == expected
