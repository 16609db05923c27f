"""The "Image Rebuilt" badge: from signed reproduce records the board verified, never from a flag.

Records are made by the code ``reproduce --sign`` runs (``reproduce.reproduction_statement``
over a ``Reproduced`` result, signed by ``bundle.reproduction.sign``); bundles are real
signed synthetic results published on a real SQLite board.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import synthetic_results as synthetic
from typer.testing import CliRunner

from packager.bundle import reproduction
from packager.bundle.keys import TrustStore, generate_keypair, load_private_key
from packager.cli import app
from packager.errors import EnvelopeError, SignatureError
from packager.reproduce import Reproduced, reproduction_statement
from packager.scoreboard.badges import Badge, Evidence
from packager.scoreboard.publish import publish
from packager.scoreboard.rebuilds import add_reproduction
from packager.scoreboard.store import Board
from packager.scoreboard.web import Snapshot

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    made = {name: generate_keypair(d / "priv", name) for name in ("author", "evaluator", "stranger")}
    trust = d / "trust"
    (trust / "authors").mkdir(parents=True)
    (trust / "evaluators").mkdir()
    shutil.copy(made["author"].public_path, trust / "authors" / "author.pub")
    shutil.copy(made["evaluator"].public_path, trust / "evaluators" / "evaluator.pub")
    return {**{n: k.private_path for n, k in made.items()}, "trust": trust}


@pytest.fixture()
def board(tmp_path: Path):
    with Board(f"sqlite:///{tmp_path / 'board.db'}") as b:
        yield b


def _published(tmp_path: Path, board: Board, keys, name: str = "a", **spec):  # type: ignore[no-untyped-def]
    b = synthetic.make_bundle(tmp_path / name, synthetic.Spec(image_seed=f"img-{name}", **spec), keys["author"])
    return publish(b, board, TrustStore.load([], keys["trust"])).row


def _record(tmp_path: Path, key: Path, *, bundle_digest: str, index: str, rebuilt: str, name: str = "r") -> Path:
    result = Reproduced(expected=index, actual=rebuilt, platforms=("linux/amd64",), seconds=12.0, harness="archive",
                        differing=() if index == rebuilt else ("linux/amd64 harness",), lock_sha256="1" * 64,
                        archive_sha256="2" * 64, bundle_digest=bundle_digest, bundle_signer="3" * 64, artifact="test-valid")
    out = tmp_path / f"{name}.reproduced.dsse.json"
    out.write_text(reproduction.sign(reproduction_statement(result), load_private_key(key)).to_json())
    return out


def _rebuilt(board: Board, row):  # type: ignore[no-untyped-def]
    return dict((a.badge, a) for a in Evidence(board.rows(), reproductions=board.reproductions()).awards(row))[Badge.REBUILT]


def test_a_verified_record_whose_digests_match_awards_the_badge(tmp_path: Path, keys, board: Board) -> None:
    row = _published(tmp_path, board, keys)
    assert not _rebuilt(board, row).awarded and "no signed reproduce record" in _rebuilt(board, row).reason
    rec = _record(tmp_path, keys["evaluator"], bundle_digest=row.bundle_digest, index=row.image_digest, rebuilt=row.image_digest)
    added = add_reproduction(rec, board, TrustStore.load([], keys["trust"]))
    assert added.inserted and added.on_board and added.row.signer_role == "evaluator"
    award = _rebuilt(board, row)
    assert award.awarded and "rebuilt offline from the inputs archive sha256 222222222222" in award.reason
    assert not add_reproduction(rec, board, TrustStore.load([], keys["trust"])).inserted  # idempotent
    assert Badge.REBUILT in Snapshot.load(board).evidence.awarded(row)  # what the page shows
    # the stored envelope is the signed record itself: it verifies again, byte for byte the same statement
    again = tmp_path / "again.json"
    again.write_text(board.engine.connect().exec_driver_sql("SELECT envelope FROM reproductions").scalar())
    assert reproduction.verify_file(again, TrustStore.load([], keys["trust"])).matches


def test_a_record_whose_rebuild_differs_is_stored_and_says_why_there_is_no_badge(tmp_path: Path, keys, board: Board) -> None:
    row = _published(tmp_path, board, keys)
    other = "sha256:" + "e" * 64
    rec = _record(tmp_path, keys["evaluator"], bundle_digest=row.bundle_digest, index=row.image_digest, rebuilt=other)
    assert add_reproduction(rec, board, TrustStore.load([], keys["trust"])).inserted
    award = _rebuilt(board, row)
    assert not award.awarded and f"gave {other[:19]}" in award.reason


def test_a_record_must_name_a_bundle_on_the_board_with_that_image(tmp_path: Path, keys, board: Board) -> None:
    row = _published(tmp_path, board, keys)
    elsewhere = _record(tmp_path, keys["evaluator"], bundle_digest="sha256:" + "f" * 64, index=row.image_digest,
                        rebuilt=row.image_digest, name="elsewhere")
    assert not add_reproduction(elsewhere, board, TrustStore.load([], keys["trust"])).on_board
    # the right bundle, but a claim about another image: the record says nothing about this row's image
    wrong = "sha256:" + "d" * 64
    lying = _record(tmp_path, keys["evaluator"], bundle_digest=row.bundle_digest, index=wrong, rebuilt=wrong, name="lying")
    add_reproduction(lying, board, TrustStore.load([], keys["trust"]))
    assert not _rebuilt(board, row).awarded


def test_untrusted_or_altered_records_are_refused_before_anything_is_stored(tmp_path: Path, keys, board: Board) -> None:
    row = _published(tmp_path, board, keys)
    trust = TrustStore.load([], keys["trust"])
    stranger = _record(tmp_path, keys["stranger"], bundle_digest=row.bundle_digest, index=row.image_digest,
                       rebuilt=row.image_digest, name="stranger")
    with pytest.raises(SignatureError, match="stranger.reproduced.dsse.json"):
        add_reproduction(stranger, board, trust)
    # a differing rebuild turned into a "match" after signing: the signature no longer covers the payload
    other = "sha256:" + "e" * 64
    rec = _record(tmp_path, keys["evaluator"], bundle_digest=row.bundle_digest, index=row.image_digest, rebuilt=other)
    env = json.loads(rec.read_text())
    payload = base64.b64decode(env["payload"]).replace(other.encode(), row.image_digest.encode())
    env["payload"] = base64.b64encode(payload).decode()
    rec.write_text(json.dumps(env))
    with pytest.raises(SignatureError):
        add_reproduction(rec, board, trust)
    # a result bundle's envelope is not a reproduce record, even though a trusted key signed it
    bundle_env = tmp_path / "a" / "envelope.dsse.json"
    with pytest.raises(EnvelopeError, match="not a reproduce record"):
        add_reproduction(bundle_env, board, trust)
    assert board.reproductions() == [] and not _rebuilt(board, row).awarded


def test_board_add_reproduction_command(tmp_path: Path, keys, board: Board) -> None:
    row = _published(tmp_path, board, keys)
    rec = _record(tmp_path, keys["evaluator"], bundle_digest=row.bundle_digest, index=row.image_digest, rebuilt=row.image_digest)
    bad = _record(tmp_path, keys["stranger"], bundle_digest=row.bundle_digest, index=row.image_digest,
                  rebuilt=row.image_digest, name="bad")
    url = board.url
    ok = CliRunner().invoke(app, ["board", "add-reproduction", str(rec), "--board", url, "--trust-dir", str(keys["trust"])])
    assert ok.exit_code == 0, ok.output
    assert "stored" in ok.output and "the same index digest" in ok.output
    # through the real command: the error class maps to its exit code, one line, no traceback
    refused = subprocess.run([sys.executable, "-m", "packager.cli", "board", "add-reproduction", str(bad), "--board", url,
                              "--trust-dir", str(keys["trust"])], capture_output=True, text=True, cwd=REPO)
    assert refused.returncode == 11, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr and "bad.reproduced.dsse.json" in refused.stderr


def test_reproduce_refuses_a_bundle_that_does_not_verify_before_touching_the_archive(tmp_path: Path, keys) -> None:
    """A validly signed bundle whose predictions were changed after signing is refused with verify's error class."""
    from packager.errors import SubjectMismatch
    from packager.reproduce import reproduce_bundle

    b = synthetic.make_bundle(tmp_path / "b", synthetic.Spec(image_seed="img-b"), keys["author"])
    preds = b / "predictions.jsonl"
    preds.write_bytes(preds.read_bytes().replace(b"\n", b"\n ", 1))
    missing = tmp_path / "no-such-archive.tar"  # never opened: the bundle is refused first
    with pytest.raises(SubjectMismatch):
        reproduce_bundle(b, missing, [], keys["trust"], tmp_path / "work")
    assert not (tmp_path / "work").exists()
