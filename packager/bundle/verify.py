"""Verify a signed result bundle (directory or .tar.gz), check by check.

0. the .tar.gz unpacks safely into a private temporary directory (a directory:
   its tree, by lstat only, is within the caps and the name rules);
1. a signature over the DSSE PAE verifies with a trusted key, and the payload
   is an in-toto Statement v1 with our result predicate; nothing but the
   envelope is read before this passes;
2. every file matches its subject's sha256 (hashed streaming, within the caps),
   no file lacks a subject, no subject lacks a file, subject names follow the name rules;
3. the image index digest is the same in the statement, the build record and
   the provenance (and, with an artifact directory, its local build and lock);
4. top-1/top-5 recomputed from predictions.jsonl and the ground truth equal the
   claim, and the counts match the stage;
5. every JSON (and the YAML manifest) of the bundle parses against its schema.

Every check runs and is reported (checks that need something an earlier step
could not provide are skipped, saying why); then the lowest-numbered failure is
raised, carrying the whole report, so the exit code names the failure class.
When check 1 fails, checks 2-5 are skipped: nothing a stranger sent is hashed
or parsed before a trusted key vouched for it. Every read is bounded before it
happens (``packager.wire``; caps in ``archive.Limits`` and ``bundle.contents``, listed in the README).
Check 4 lives in ``bundle.recompute``, the shared loader and check 5 in ``bundle.contents``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from packager import wire
from packager.bundle import archive
from packager.bundle.contents import (
    MAX_JSON_BYTES,
    BundleFiles,
    Skip,
    check_schemas,
    first_error,
    load_files,
    sha256_of,
)
from packager.bundle.dsse import (
    ENVELOPE_NAME,
    read_envelope,
    read_payload,
    signature_bytes,
)
from packager.bundle.keys import Role, TrustedKey, TrustStore
from packager.bundle.labels import read_labels  # noqa: F401  (tests and older callers import it from here)
from packager.bundle.recompute import TruthSource, check_metrics
from packager.bundle.statement import (
    IMAGE_SUBJECT,
    LOCK_NAME,
    MANIFEST_NAME,
    PROVENANCE_NAME,
    BuildRecord,
    ProvenanceStatement,
    Statement,
)
from packager.contract import BUILD_RECORD_NAME
from packager.errors import (
    BadInput,
    BundleCheckFailed,
    EnvelopeError,
    ImageDigestMismatch,
    SignatureError,
    SubjectMismatch,
    UnsafeArchive,
)
from packager.repo import default_build_root
from packager.results import Accuracy

log = logging.getLogger(__name__)

Status = Literal["pass", "fail", "skip"]
CHECK_NAMES = {
    0: "archive unpacks safely",
    1: "signature by a trusted key",
    2: "files match subjects",
    3: "image, lock, manifest agree",
    4: "metrics recomputed",
    5: "schemas",
}
TREE_CHECK_NAME = "bundle tree is safe"  # check 0 of a directory bundle, reported only when it fails


@dataclass(frozen=True)
class CheckResult:
    number: int
    name: str
    status: Status
    detail: str
    error: BundleCheckFailed | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Report:
    bundle: Path
    checks: tuple[CheckResult, ...]
    signer: TrustedKey | None = None
    index_digest: str | None = None
    accuracy: Accuracy | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(c.status == "pass" for c in self.checks)

    def first_failure(self) -> BundleCheckFailed | None:
        return next((c.error for c in self.checks if c.status == "fail"), None)

    def as_dict(self) -> dict:
        """JSON-ready summary, e.g. for the scoreboard to store next to a submission."""
        failure = self.first_failure()
        return {
            "bundle": str(self.bundle),
            "ok": self.ok,
            "exit_code": failure.return_code if failure else 0,
            "signer": {"keyid": self.signer.keyid, "role": self.signer.role} if self.signer else None,
            "index_digest": self.index_digest,
            "accuracy": self.accuracy.model_dump(mode="json") if self.accuracy else None,
            "checks": [
                {"number": c.number, "name": c.name, "status": c.status, "detail": c.detail, "error": type(c.error).__name__ if c.error else None}
                for c in self.checks
            ],
            "seconds": round(self.seconds, 4),
        }


def verify_bundle(
    bundle: Path,
    trust: TrustStore,
    *,
    labels: Path | None = None,
    dataset: Path | None = None,
    artifact: Path | None = None,
    require_role: Role | None = None,
    limits: archive.Limits = archive.Limits(),
    build_root: Path | None = None,
) -> Report:
    """Run every check; return the report if all pass, else raise the first failure with ``.report`` set.

    Ground truth for check 4, first found: ``labels`` (a labels TSV or an
    ILSVRC2012 ``val.txt``), ``dataset`` (a dataset directory laid out as the
    bundle's manifest says), else the bundle's own ``labels.tsv``. ``build_root`` is where the
    artifact's local build record is, when it was built somewhere else than beside it.
    """
    truth_source = TruthSource(labels, dataset)
    start = time.perf_counter()
    local = (artifact, build_root)
    if bundle.is_dir():
        report = _verify_dir(bundle, bundle, trust, truth_source, local, require_role, [], start, limits)
    elif bundle.is_file():
        with tempfile.TemporaryDirectory(prefix="request-pack-verify-") as tmp:
            root = Path(tmp) / "bundle"
            try:
                archive.safe_unpack(bundle, root, limits)
            except UnsafeArchive as e:
                report = _refused(bundle, CHECK_NAMES[0], e, "archive rejected", start)
            else:
                pre = [CheckResult(0, CHECK_NAMES[0], "pass", f"unpacked {bundle.name}")]
                report = _verify_dir(bundle, root, trust, truth_source, local, require_role, pre, start, limits)
    else:
        raise BadInput("no such bundle (a directory or .tar.gz)", file=bundle)
    failed = next((c for c in report.checks if c.status == "fail"), None)
    if failed is not None and failed.error is not None:
        failure = failed.error
        failure.report = report
        # The one line a script or a person sees: which check, then what.
        others = sum(c.status == "fail" for c in report.checks) - 1
        also = f" (+{others} more failed check{'s' if others > 1 else ''})" if others else ""
        failure.message = f"check {failed.number} ({failed.name}) failed: {failure.message}{also}"
        raise failure
    return report


def _refused(bundle: Path, name: str, e: UnsafeArchive, why: str, start: float) -> Report:
    checks = [CheckResult(0, name, "fail", str(e), e)]
    checks += [CheckResult(n, CHECK_NAMES[n], "skip", why) for n in range(1, 6)]
    return Report(bundle, tuple(checks), seconds=time.perf_counter() - start)


def _verify_dir(
    shown: Path,
    root: Path,
    trust: TrustStore,
    truth_source: TruthSource,
    local: tuple[Path | None, Path | None],
    require_role: Role | None,
    checks: list[CheckResult],
    start: float,
    limits: archive.Limits,
) -> Report:
    b = BundleFiles(root)
    try:
        b.tree = archive.scan_tree(root, limits)  # lstat only: counts, sizes, names
    except UnsafeArchive as e:
        return _refused(shown, TREE_CHECK_NAME, e, "bundle tree rejected", start)
    signer_box: list[TrustedKey] = []
    accuracy_box: list[Accuracy] = []

    def run(number: int, fn: Callable[[], str]) -> None:
        try:
            detail = fn()
        except Skip as s:
            checks.append(CheckResult(number, CHECK_NAMES[number], "skip", str(s)))
        except BundleCheckFailed as e:
            checks.append(CheckResult(number, CHECK_NAMES[number], "fail", str(e), e))
        else:
            checks.append(CheckResult(number, CHECK_NAMES[number], "pass", detail))

    run(1, lambda: _check_signature(b, trust, require_role, signer_box))
    if not b.trusted:
        # Nothing else a stranger sent is hashed or parsed before a trusted key vouched for it.
        why = "signature not verified: nothing else was read"
        checks += [CheckResult(n, CHECK_NAMES[n], "skip", why) for n in range(2, 6)]
    else:
        run(2, lambda: _check_subjects(b, limits))
        load_files(b)  # once, for checks 3-5
        run(3, lambda: _check_image(b, *local))
        run(4, lambda: check_metrics(b, truth_source, accuracy_box))
        run(5, lambda: check_schemas(b))
    digest = b.statement.predicate.image.index_digest if b.statement else None
    return Report(
        shown,
        tuple(checks),
        signer=signer_box[0] if signer_box else None,
        index_digest=digest,
        accuracy=accuracy_box[0] if accuracy_box else None,
        seconds=time.perf_counter() - start,
    )


# --- 1. signature ------------------------------------------------------------------


def _check_signature(b: BundleFiles, trust: TrustStore, require_role: Role | None, signer_box: list[TrustedKey]) -> str:
    env_path = b.file(ENVELOPE_NAME)
    if env_path is None:
        if os.path.lexists(b.root / ENVELOPE_NAME):
            raise EnvelopeError(f"{ENVELOPE_NAME}: not a regular file (symlink, directory or special file)")
        raise EnvelopeError(f"{ENVELOPE_NAME}: missing: the bundle is not signed")
    b.envelope = read_envelope(env_path)  # a regular file within MAX_ENVELOPE_BYTES, strict JSON
    message = b.envelope.pae()

    problems: list[str] = []
    for sig in b.envelope.signatures:
        raw = signature_bytes(sig)
        # The keyid is only a hint: an unknown or empty one means "try every trusted key".
        hinted = trust.by_id(sig.keyid) if sig.keyid else None
        candidates = [hinted] if hinted else list(trust.keys)
        key = next((k for k in candidates if k.verifies(raw, message)), None)
        if key is None:
            if hinted:
                problems.append(f"signature by trusted key {sig.keyid[:16]} does not verify over the PAE (payload or payloadType altered)")
            elif sig.keyid:
                problems.append(f"signed by key {sig.keyid[:16]}, which is not among the {len(trust)} trusted key(s)")
            else:
                problems.append(f"signature verifies with none of the {len(trust)} trusted key(s)")
        elif require_role and key.role not in (require_role, "any"):
            problems.append(f"key {key.keyid[:16]} is trusted as {key.role}, not {require_role}")
        else:
            signer_box.append(key)
            break
    if not signer_box:
        raise SignatureError("; ".join(problems))
    # Only now is the payload parsed: strictly (UTF-8, finite numbers, bounded nesting), then by the model.
    try:
        b.statement = Statement.model_validate(read_payload(b.envelope))
    except ValidationError as e:
        raise EnvelopeError(f"payload is not an in-toto Statement v1 with the result predicate: {first_error(e)}") from None
    b.trusted = True
    key = signer_box[0]
    return f"Ed25519 key {key.keyid[:16]} ({key.role}, {key.source.name})"


# --- 2. subjects -----------------------------------------------------------------------


def _subject_names(st: Statement, limits: archive.Limits) -> None:
    """Subject names follow the bundle's name rules: a relative path, NFC, bounded, no two folding alike."""
    if len(st.subject) > limits.max_entries + 1:
        raise SubjectMismatch(f"statement has {len(st.subject)} subjects, more than the {limits.max_entries} files a bundle may hold")
    names = [s.name for s in st.subject if s.name != IMAGE_SUBJECT]
    for name in names:
        parts = name.split("/")
        if name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in name:
            raise SubjectMismatch(f"subject {name!r}: not a plain relative path")
        wire.check_name(name, error=SubjectMismatch, shown="subject")
    clash = wire.collision(names)
    if clash and clash[0] != clash[1]:
        raise SubjectMismatch(f"subjects {clash[0]!r} and {clash[1]!r} collide after Unicode normalisation or case folding")


def _check_subjects(b: BundleFiles, limits: archive.Limits) -> str:
    st = b.statement_or_skip()
    tree = b.tree
    assert tree is not None
    _subject_names(st, limits)
    files = {rel: p for rel, p in tree.files.items() if rel != ENVELOPE_NAME}
    subjects = st.file_subjects()
    problems: list[str] = []
    if tree.others:
        problems += [f"{rel}: symlink or special file" for rel in tree.others]
    if len(subjects) + len(st.image_subjects()) != len(st.subject):
        problems.append("duplicate subject names")
    for name in sorted(set(subjects) - set(files)):
        problems.append(f"{name}: subject without file (removed or renamed?)")
    for name in sorted(set(files) - set(subjects)):
        problems.append(f"{name}: file without subject (added or renamed?)")
    for name in sorted(set(files) & set(subjects)):
        want = subjects[name].sha256
        if want is None:
            problems.append(f"{name}: subject has no sha256 digest")
            continue
        got = sha256_of(files[name], name, limits.max_entry_bytes)
        if got != want:
            problems.append(f"{name}: sha256 {got[:16]}… differs from subject {want[:16]}…")
    labels = st.predicate.labels
    if labels is not None and labels.name in subjects and subjects[labels.name].sha256 != labels.sha256:
        problems.append(f"predicate labels digest differs from the {labels.name} subject")
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise SubjectMismatch("; ".join(problems[:3]) + more)
    return f"{len(files)} files match their subjects"


# --- 3. image digest -----------------------------------------------------------------


def _check_image(b: BundleFiles, artifact: Path | None, build_root: Path | None = None) -> str:
    st = b.statement_or_skip()
    images = st.image_subjects()
    if len(images) != 1 or not images[0].sha256:
        raise ImageDigestMismatch(f"statement has {len(images)} {IMAGE_SUBJECT!r} subjects with sha256, expected exactly 1")
    claimed = f"sha256:{images[0].sha256}"
    sources = {"statement subject": claimed, "statement predicate": st.predicate.image.index_digest}
    record = b.models.get(BUILD_RECORD_NAME)
    prov = b.models.get(PROVENANCE_NAME)
    if not isinstance(record, BuildRecord) or not isinstance(prov, ProvenanceStatement):
        raise Skip(f"{BUILD_RECORD_NAME} or {PROVENANCE_NAME} unreadable (see check 5)")
    sources[BUILD_RECORD_NAME] = record.index_digest
    problems = [f"{name} says {value}" for name, value in sources.items() if value != claimed]
    if claimed not in prov.sha256_digests():
        problems.append(f"{PROVENANCE_NAME} has no subject with digest {claimed} (has {', '.join(sorted(prov.sha256_digests()))})")
    bound = _check_record_inputs(b, record, st.predicate.run.artifact, problems)
    local = ""
    if artifact is not None:
        local = _check_artifact(b, artifact, st.predicate.run.artifact, claimed, problems, build_root)
    if problems:
        raise ImageDigestMismatch(f"image {claimed}: " + "; ".join(problems))
    return f"{claimed[:19]}… in statement, build record, provenance{bound}{local}"


def _check_record_inputs(b: BundleFiles, record: BuildRecord, name: str, problems: list[str]) -> str:
    """The image was built from the lock and manifest the bundle carries (when the record says which)."""
    bound = []
    if record.artifact is not None and record.artifact != name:
        problems.append(f"{BUILD_RECORD_NAME} is for artifact {record.artifact!r}, the result for {name!r}")
    lock = b.file(LOCK_NAME)
    if record.lock_sha256 is not None:
        if lock is None:
            problems.append(f"{BUILD_RECORD_NAME} pins lock {record.lock_sha256[:16]}… but the bundle has no {LOCK_NAME}")
        elif sha256_of(lock, LOCK_NAME) != record.lock_sha256:
            problems.append(f"{LOCK_NAME} is not the lock the image was built from ({BUILD_RECORD_NAME} lock_sha256)")
        else:
            bound.append(LOCK_NAME)
    manifest = b.models.get(MANIFEST_NAME)
    if record.manifest_sha256 is not None and manifest is not None:
        if manifest.digest() != record.manifest_sha256:  # type: ignore[attr-defined]
            problems.append(f"{MANIFEST_NAME} is not the manifest the image was built from ({BUILD_RECORD_NAME} manifest_sha256)")
        else:
            bound.append(MANIFEST_NAME)
    return (", " + " and ".join(bound) + " as built") if bound else ""


def _check_artifact(b: BundleFiles, artifact: Path, name: str, claimed: str, problems: list[str],
                    build_root: Path | None = None) -> str:
    if not artifact.is_dir():
        raise BadInput("artifact directory does not exist", file=artifact)
    compared = []
    # The build writes repo.default_build_root(artifact)/<name>/; a build/ inside the artifact directory is accepted too.
    roots = [artifact.resolve() / "build", default_build_root(artifact)]
    if build_root is not None:  # the caller knows where it built: only that record counts
        roots = [build_root.resolve()]
    record_path = next((r / name / BUILD_RECORD_NAME for r in roots if (r / name / BUILD_RECORD_NAME).is_file()),
                       roots[0] / name / BUILD_RECORD_NAME)
    if record_path.is_file():
        try:
            local = BuildRecord.model_validate(wire.load_file(record_path, MAX_JSON_BYTES, error=BadInput, shown=str(record_path)))
        except ValidationError as e:
            raise BadInput(first_error(e), file=record_path) from e
        compared.append("local build")
        if local.index_digest != claimed:
            problems.append(f"local build {record_path} says {local.index_digest} (result replayed from another image?)")
    for fname in (LOCK_NAME, MANIFEST_NAME):
        theirs, ours = b.file(fname), artifact / fname
        if ours.is_file():
            compared.append(f"local {fname}")
            if theirs is None:
                problems.append(f"bundle has no {fname} to compare with {ours}")
            elif fname == MANIFEST_NAME:
                # the bundle carries the resolved manifest; the artifact's may use components (docs/components.md)
                from packager.manifest import load_manifest

                mine = b.models.get(MANIFEST_NAME)
                if mine is None or mine.digest() != load_manifest(artifact).digest():  # type: ignore[attr-defined]
                    problems.append(f"bundle's {fname} differs from {ours} resolved (request-pack show)")
            elif sha256_of(theirs, fname) != sha256_of(ours, str(ours), error=BadInput):
                problems.append(f"bundle's {fname} differs from {ours}")
    return (", " + ", ".join(compared)) if compared else ", (no local build or lock found)"
