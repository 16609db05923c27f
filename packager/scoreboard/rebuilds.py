"""Publish a signed reproduce record on the board: verify it first, store what its statement says, never a flag.

``request-pack board add-reproduction RECORD --board URL --trust KEY`` reads the record
(bounded, a regular file), checks its signature against the trusted keys before parsing
the payload (packager/bundle/reproduction.py), and stores the claimed and rebuilt index
digests, the bundle and archive it names and the envelope itself, so anyone can check it
again. The "Image Rebuilt" badge (badges.py) is derived from these rows and the results
they name; a record whose digests differ is stored too, and shows why there is no badge.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packager.bundle import reproduction
from packager.bundle.keys import TrustStore
from packager.scoreboard.store import Board, ReproductionRow, now_iso


@dataclass(frozen=True)
class Added:
    row: ReproductionRow
    inserted: bool  # False: the board had this very record already
    on_board: bool  # the bundle it names is a result on this board (else no badge can follow from it yet)


def add_reproduction(record: Path | reproduction.Reproduction, board: Board, trust: TrustStore) -> Added:
    """Store a record: a file (verified here) or one ``reproduction.verify_file`` verified already."""
    rec = record if isinstance(record, reproduction.Reproduction) else \
        reproduction.verify_file(record, trust)  # signature first, then strict payload and model; typed errors
    row = ReproductionRow(record_digest=rec.statement_digest, bundle_digest=rec.bundle_digest,
                          index_digest=rec.index_digest, rebuilt_digest=rec.rebuilt_digest, key_id=rec.signer.keyid,
                          signer_role=rec.signer.role, archive_sha256=rec.predicate.archive.sha256,
                          published_at=now_iso())
    inserted = board.add_reproduction(row, rec.envelope_json)
    return Added(row, inserted, board.get(rec.bundle_digest) is not None)
