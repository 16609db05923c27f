"""ACM-style artifact badges, derived only from verified evidence on the board.

Every published row passed ``verify``; a badge is a statement about what those
verified rows show, with the reason it was (or was not) awarded:

- **Available**: the signed bundle carried the manifest (request.yaml) and
  named the OCI image index whose provenance it includes, so anyone can read
  how it was built and pull the same bytes.
- **Functional**: a functional-stage result for the same image passed, i.e.
  its top-1 reached the stage's ``min_top1`` from the manifest.
- **Reusable**: the same manifest has verified results on at least two
  platforms (it builds and runs on a second one).
- **Results Reproduced**: a bundle signed by an *evaluator* key (a different
  key from this result's) for the same image, stage, platform and input count
  agrees with an author's within ``Tolerances``.
- **Image Rebuilt**: a verified reproduce record (``request-pack reproduce --sign``,
  packager/bundle/reproduction.py) for a bundle on this board whose signed statement
  says the image rebuilt offline from the archive of its inputs has the very index
  digest the bundle names. The rule compares the two digests itself; the record
  carries no verdict. A rebuilt image is not a re-measured result, so this is not
  "Results Reproduced" (ACM: the numbers obtained again by someone else).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from packager.scoreboard.store import ReproductionRow, ResultRow


class Badge(str, enum.Enum):
    AVAILABLE = "Available"
    FUNCTIONAL = "Functional"
    REUSABLE = "Reusable"
    REPRODUCED = "Results Reproduced"
    REBUILT = "Image Rebuilt"

    @property
    def slug(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Tolerances:
    """How close an evaluator's numbers must be to the author's to count as reproduced.

    Accuracy is a deterministic function of the image and the inputs, so the
    tolerance is tight; latency and throughput depend on the machine and are
    not compared.
    """

    top1_abs: float = 0.005
    top5_abs: float = 0.005

    def describe(self) -> str:
        return f"|Δtop-1| ≤ {self.top1_abs:g} and |Δtop-5| ≤ {self.top5_abs:g} on the same image, stage, platform and input count"


@dataclass(frozen=True)
class Award:
    badge: Badge
    awarded: bool
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"badge": self.badge.value, "awarded": self.awarded, "reason": self.reason}


class Evidence:
    """Every row of the board, indexed for the badge rules (badges never depend on a page's filters)."""

    def __init__(self, rows: Sequence[ResultRow], tolerances: Tolerances = Tolerances(),
                 reproductions: Sequence[ReproductionRow] = ()) -> None:
        self.tolerances = tolerances
        # a record counts only for a bundle on this board (verified when published) that names the same image
        image_of = {r.bundle_digest: r.image_digest for r in rows}
        self.rebuilds: dict[str, list[ReproductionRow]] = {}
        for rec in reproductions:
            if image_of.get(rec.bundle_digest) == rec.index_digest:
                self.rebuilds.setdefault(rec.index_digest, []).append(rec)
        self.by_image: dict[str, list[ResultRow]] = {}
        self.platforms_by_manifest: dict[str, set[str]] = {}
        for r in rows:
            self.by_image.setdefault(r.image_digest, []).append(r)
            self.platforms_by_manifest.setdefault(_manifest_key(r), set()).add(r.platform)

    def awards(self, row: ResultRow) -> tuple[Award, ...]:
        return (self._available(row), self._functional(row), self._reusable(row), self._reproduced(row),
                self._rebuilt(row))

    def awarded(self, row: ResultRow) -> tuple[Badge, ...]:
        return tuple(a.badge for a in self.awards(row) if a.awarded)

    # --- the rules ------------------------------------------------------------------

    def _available(self, row: ResultRow) -> Award:
        if row.manifest_sha256 is None:
            return Award(Badge.AVAILABLE, False, "the bundle did not include its manifest (request.yaml)")
        return Award(
            Badge.AVAILABLE,
            True,
            f"signed bundle includes the manifest (sha256 {row.manifest_sha256[:12]}…) and provenance of image {row.image_digest[:19]}…",
        )

    def _functional(self, row: ResultRow) -> Award:
        runs = [r for r in self.by_image.get(row.image_digest, ()) if r.stage == "functional"]
        passed = [r for r in runs if r.top1 >= (r.min_top1 or 0.0)]
        if passed:
            r = passed[0]
            return Award(Badge.FUNCTIONAL, True, f"functional stage passed: top-1 {r.top1:.3f} ≥ min_top1 {r.min_top1 or 0.0:.3f} on {r.platform}")
        if runs:
            r = runs[0]
            return Award(Badge.FUNCTIONAL, False, f"functional stage failed: top-1 {r.top1:.3f} < min_top1 {r.min_top1 or 0.0:.3f}")
        return Award(Badge.FUNCTIONAL, False, "no functional-stage result for this image on the board")

    def _reusable(self, row: ResultRow) -> Award:
        platforms = sorted(self.platforms_by_manifest.get(_manifest_key(row), ()))
        if len(platforms) >= 2:
            return Award(Badge.REUSABLE, True, f"the same manifest has verified results on {', '.join(platforms)}")
        return Award(Badge.REUSABLE, False, f"verified results on {', '.join(platforms) or 'no platform'} only; a second platform is needed")

    def _reproduced(self, row: ResultRow) -> Award:
        t = self.tolerances
        same = [
            r
            for r in self.by_image.get(row.image_digest, ())
            if r.stage == row.stage and r.platform == row.platform and r.samples == row.samples
        ]
        authors = [r for r in same if r.signer_role != "evaluator"]
        evaluators = [r for r in same if r.signer_role == "evaluator"]
        # Pair this row with counterparts of the other side, signed by another key.
        theirs = [r for r in (evaluators if row.signer_role != "evaluator" else authors) if r.key_id != row.key_id]
        if not theirs:
            if not evaluators:
                return Award(Badge.REPRODUCED, False, "no evaluator-signed result for this image, stage, platform and input count")
            return Award(Badge.REPRODUCED, False, "no result by another key to compare with")
        who = "evaluator" if row.signer_role != "evaluator" else "author"
        best = min(theirs, key=lambda e: (abs(row.top1 - e.top1), abs(row.top5 - e.top5)))
        d1, d5 = abs(row.top1 - best.top1), abs(row.top5 - best.top5)
        ok = d1 <= t.top1_abs and d5 <= t.top5_abs
        verb = "agrees" if ok else "disagrees"
        return Award(Badge.REPRODUCED, ok, f"{who} key {best.key_id[:12]}… {verb}: Δtop-1 {d1:.4f}, Δtop-5 {d5:.4f} ({t.describe()})")


    def _rebuilt(self, row: ResultRow) -> Award:
        recs = self.rebuilds.get(row.image_digest, [])
        same = [r for r in recs if r.rebuilt_digest == r.index_digest == row.image_digest]
        if same:
            r = same[0]
            return Award(Badge.REBUILT, True, f"rebuilt offline from the inputs archive sha256 {r.archive_sha256[:12]}… by "
                                              f"{r.signer_role} key {r.key_id[:12]}…: index {r.rebuilt_digest[:19]}… as the bundle names "
                                              f"({len(same)} signed record(s))")
        if recs:
            r = recs[0]
            return Award(Badge.REBUILT, False, f"the rebuild by key {r.key_id[:12]}… gave {r.rebuilt_digest[:19]}…, "
                                               f"not {row.image_digest[:19]}…")
        return Award(Badge.REBUILT, False, "no signed reproduce record for this image (`request-pack reproduce --sign`)")


def _manifest_key(row: ResultRow) -> str:
    # Without a manifest copy the image index stands in for "the same submission".
    return row.manifest_sha256 or row.image_digest
