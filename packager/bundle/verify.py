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
happens (``packager.wire``; caps in ``archive.Limits`` and below, listed in the README).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import BaseModel, TypeAdapter, ValidationError

from packager import wire
from packager.bundle import archive
from packager.bundle.dsse import (
    ENVELOPE_NAME,
    Envelope,
    read_envelope,
    read_payload,
    signature_bytes,
)
from packager.bundle.keys import Role, TrustedKey, TrustStore
from packager.bundle.knobs import RUN_RECORD_NAME, run_config_problems
from packager.bundle.labels import read_labels
from packager.bundle.power import host_power_problems
from packager.bundle.statement import (
    IMAGE_SUBJECT,
    LABELS_NAME,
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
    MetricsMismatch,
    RequestPackError,
    SchemaError,
    SignatureError,
    SubjectMismatch,
    UnsafeArchive,
)
from packager.repo import default_build_root
from packager.results import (
    METRICS_NAME,
    PREDICTIONS_NAME,
    SYSTEM_NAME,
    Accuracy,
    Metrics,
    Prediction,
    System,
    accuracy_from,
)

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
REQUIRED_JSON: dict[str, type[BaseModel]] = {
    METRICS_NAME: Metrics,
    SYSTEM_NAME: System,
    BUILD_RECORD_NAME: BuildRecord,
    PROVENANCE_NAME: ProvenanceStatement,
}
TREE_CHECK_NAME = "bundle tree is safe"  # check 0 of a directory bundle, reported only when it fails
ACCURACY_TOLERANCE = 1e-9  # top-1/top-5 are ratios of the same integers; only float noise may differ
# Caps beyond archive.Limits (README, "Caps"), from a real 50,000-image bundle:
MAX_JSON_BYTES = 8 << 20  # one JSON file; the largest real one, LoadGen's accuracy log, is ~3.3 MB
MAX_SAMPLES = 200_000  # predictions and labels: 4x ImageNet's 50,000 validation images
MAX_LINE_BYTES = 4096  # one line of predictions.jsonl (~210 bytes) or labels.tsv (~50)
_BATCH = 4096  # predictions validated per pydantic call: one call per line is several times slower


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


class _Skip(Exception):
    """A check cannot run because an input is unavailable; not a failure in itself."""


@dataclass
class _Bundle:
    """What the checks share: parsed once, so 50,000 predictions are decoded once."""

    root: Path
    envelope: Envelope | None = None
    statement: Statement | None = None
    trusted: bool = False
    models: dict[str, BaseModel] = field(default_factory=dict)
    predictions: list["_Pred"] | None = None
    labels: dict[str, int] | None = None
    schema_errors: list[str] = field(default_factory=list)
    tree: archive.Tree | None = None

    def file(self, name: str) -> Path | None:
        """A regular file of the bundle, by lstat: a symlink named metrics.json is never followed."""
        assert self.tree is not None  # scanned first, by _verify_dir
        return self.tree.files.get(name)


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
    truth_source = _TruthSource(labels, dataset)
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
    truth_source: "_TruthSource",
    local: tuple[Path | None, Path | None],
    require_role: Role | None,
    checks: list[CheckResult],
    start: float,
    limits: archive.Limits,
) -> Report:
    b = _Bundle(root)
    try:
        b.tree = archive.scan_tree(root, limits)  # lstat only: counts, sizes, names
    except UnsafeArchive as e:
        return _refused(shown, TREE_CHECK_NAME, e, "bundle tree rejected", start)
    signer_box: list[TrustedKey] = []
    accuracy_box: list[Accuracy] = []

    def run(number: int, fn: Callable[[], str]) -> None:
        try:
            detail = fn()
        except _Skip as s:
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
        _load_files(b)  # once, for checks 3-5
        run(3, lambda: _check_image(b, *local))
        run(4, lambda: _check_metrics(b, truth_source, accuracy_box))
        run(5, lambda: _check_schemas(b))
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


def _check_signature(b: _Bundle, trust: TrustStore, require_role: Role | None, signer_box: list[TrustedKey]) -> str:
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
        raise EnvelopeError(f"payload is not an in-toto Statement v1 with the result predicate: {_first_error(e)}") from None
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


def _check_subjects(b: _Bundle, limits: archive.Limits) -> str:
    st = _statement(b)
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
        got = _sha256(files[name], name, limits.max_entry_bytes)
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


def _check_image(b: _Bundle, artifact: Path | None, build_root: Path | None = None) -> str:
    st = _statement(b)
    images = st.image_subjects()
    if len(images) != 1 or not images[0].sha256:
        raise ImageDigestMismatch(f"statement has {len(images)} {IMAGE_SUBJECT!r} subjects with sha256, expected exactly 1")
    claimed = f"sha256:{images[0].sha256}"
    sources = {"statement subject": claimed, "statement predicate": st.predicate.image.index_digest}
    record = b.models.get(BUILD_RECORD_NAME)
    prov = b.models.get(PROVENANCE_NAME)
    if not isinstance(record, BuildRecord) or not isinstance(prov, ProvenanceStatement):
        raise _Skip(f"{BUILD_RECORD_NAME} or {PROVENANCE_NAME} unreadable (see check 5)")
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


def _check_record_inputs(b: _Bundle, record: BuildRecord, name: str, problems: list[str]) -> str:
    """The image was built from the lock and manifest the bundle carries (when the record says which)."""
    bound = []
    if record.artifact is not None and record.artifact != name:
        problems.append(f"{BUILD_RECORD_NAME} is for artifact {record.artifact!r}, the result for {name!r}")
    lock = b.file(LOCK_NAME)
    if record.lock_sha256 is not None:
        if lock is None:
            problems.append(f"{BUILD_RECORD_NAME} pins lock {record.lock_sha256[:16]}… but the bundle has no {LOCK_NAME}")
        elif _sha256(lock, LOCK_NAME) != record.lock_sha256:
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


def _check_artifact(b: _Bundle, artifact: Path, name: str, claimed: str, problems: list[str],
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
            raise BadInput(_first_error(e), file=record_path) from e
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
            elif _sha256(theirs, fname) != _sha256(ours, str(ours), error=BadInput):
                problems.append(f"bundle's {fname} differs from {ours}")
    return (", " + ", ".join(compared)) if compared else ", (no local build or lock found)"


# --- 4. metrics ---------------------------------------------------------------------


@dataclass(frozen=True)
class _TruthSource:
    labels: Path | None = None
    dataset: Path | None = None


def _check_metrics(b: _Bundle, source: _TruthSource, accuracy_box: list[Accuracy]) -> str:
    st = _statement(b)
    metrics = b.models.get(METRICS_NAME)
    if not isinstance(metrics, Metrics) or b.predictions is None:
        raise _Skip(f"{METRICS_NAME} or {PREDICTIONS_NAME} unreadable (see check 5)")
    labels = source.labels
    if labels is None and source.dataset is not None:
        truth = _dataset_truth(b, source.dataset)
        truth_name = f"dataset {source.dataset}"
    elif labels is not None:
        try:
            truth = read_labels(labels)
        except ValueError as e:
            raise BadInput(str(e), file=labels) from None
        truth_name = str(labels)
    else:
        if b.file(LABELS_NAME) is None:
            raise MetricsMismatch(f"no ground truth: the bundle has no {LABELS_NAME} and neither --labels nor --dataset was given")
        if b.labels is None:
            raise _Skip(f"{LABELS_NAME} unreadable (see check 5)")
        truth = b.labels
        truth_name = f"bundle {LABELS_NAME}"

    problems: list[str] = []
    if metrics != st.predicate.metrics:
        problems.append(f"{METRICS_NAME} differs from the metrics in the signed predicate")
    ids = [p.id for p in b.predictions]
    if len(set(ids)) != len(ids):
        problems.append(f"{PREDICTIONS_NAME} has {len(ids) - len(set(ids))} duplicate id(s)")
    unlabeled = [i for i in ids if i not in truth]
    if unlabeled:
        raise MetricsMismatch(f"{len(unlabeled)} prediction(s) have no label in {truth_name}, e.g. {unlabeled[0]!r}")
    got = accuracy_from(b.predictions, truth)
    accuracy_box.append(got)
    claim = metrics.accuracy
    for fname in ("samples", "correct_top1", "correct_top5"):
        if getattr(claim, fname) != getattr(got, fname):
            problems.append(f"{fname} claimed {getattr(claim, fname)}, recomputed {getattr(got, fname)}")
    for fname in ("top1", "top5"):
        if abs(getattr(claim, fname) - getattr(got, fname)) > ACCURACY_TOLERANCE:
            problems.append(f"{fname} claimed {getattr(claim, fname):.6f}, recomputed {getattr(got, fname):.6f}")
    stage = st.predicate.stage
    if metrics.stage != stage or st.predicate.run.stage != stage:
        problems.append(f"stage {metrics.stage!r} in {METRICS_NAME} vs {stage!r} in the statement")
    if st.predicate.run.samples != got.samples:
        problems.append(f"statement run.samples {st.predicate.run.samples} vs {got.samples} predictions")
    record = b.file(RUN_RECORD_NAME)
    run_record = _json(b, RUN_RECORD_NAME, record) if record is not None else None
    problems += run_config_problems(st, metrics, run_record)
    problems += host_power_problems(st, run_record)
    expected = _expected_samples(b, stage, len(truth))
    if expected is not None and got.samples != expected:
        problems.append(f"{stage} stage should evaluate {expected} inputs, {PREDICTIONS_NAME} has {got.samples}")
    if problems:
        raise MetricsMismatch("; ".join(problems))
    return f"top-1 {got.top1:.4f} ({got.correct_top1}/{got.samples}), top-5 {got.top5:.4f} ({got.correct_top5}/{got.samples}) vs {truth_name}"


def _dataset_truth(b: _Bundle, root: Path) -> dict[str, int]:
    """Ground truth read from a local copy of the dataset, the way the harness reads it."""
    from packager.harness.dataset import DatasetSpec, load_dataset, resolve, truth

    manifest = b.models.get(MANIFEST_NAME)
    ds = getattr(manifest, "dataset", None)
    hint = DatasetSpec(root=root) if ds is None else DatasetSpec(root=root, layout=ds.layout, labels=ds.labels, images=ds.images, synsets=ds.synsets)
    # The user's copy may be in another layout than the manifest's (an ILSVRC2012 directory with val.txt):
    # read it as the run did, by the layout the signed metrics record, else by detection.
    metrics = b.models.get(METRICS_NAME)
    recorded = (getattr(metrics, "dataset", None) or {}).get("layout")
    return truth(load_dataset(resolve(root, hint, layout=recorded if isinstance(recorded, str) else None)))


def _expected_samples(b: _Bundle, stage: str, n_labels: int) -> int | None:
    """The stage's input count from the bundle's manifest, capped by the labelled inputs."""
    manifest = b.models.get(MANIFEST_NAME)
    if manifest is None:
        return n_labels if stage == "full" else None
    wanted = getattr(manifest.run.stages, stage).samples  # type: ignore[attr-defined]
    return n_labels if wanted is None else min(wanted, n_labels)


# --- 5. schemas and the shared loader ----------------------------------------------------


def _sha256(path: Path, shown: str, limit: int = archive.DEFAULT_MAX_ENTRY_BYTES,
            error: wire.Refuse = SubjectMismatch) -> str:
    return wire.sha256_regular(path, limit, error=error, shown=shown)


def _json(b: _Bundle, rel: str, path: Path) -> object | None:
    """One JSON file of the bundle, bounded and strict; a refusal is recorded as a schema error."""
    try:
        return wire.load_file(path, MAX_JSON_BYTES, error=SchemaError, shown=rel)
    except SchemaError as e:
        b.schema_errors.append(str(e))
        return None


def _load_files(b: _Bundle) -> None:
    for name, model in REQUIRED_JSON.items():
        path = b.file(name)
        if path is None:
            b.schema_errors.append(f"{name}: missing or not a regular file")
            continue
        data = _json(b, name, path)
        if data is None:
            continue
        try:
            b.models[name] = model.model_validate(data)
        except ValidationError as e:
            b.schema_errors.append(f"{name}: {_first_error(e)}")
    path = b.file(PREDICTIONS_NAME)
    if path is None:
        b.schema_errors.append(f"{PREDICTIONS_NAME}: missing or not a regular file")
    else:
        b.predictions = _read_predictions(path, b.schema_errors)
    assert b.tree is not None
    for rel, p in b.tree.files.items():
        # Other JSON files must parse, except empty ones: LoadGen leaves an
        # empty mlperf_log_trace.json when tracing is off, and it claims nothing.
        if rel.endswith(".json") and rel not in REQUIRED_JSON and rel != ENVELOPE_NAME and p.lstat().st_size:
            _json(b, rel, p)
    manifest = b.file(MANIFEST_NAME)
    if manifest is not None:
        from packager.manifest import Manifest
        from packager.yamlsafe import load_yaml

        try:
            b.models[MANIFEST_NAME] = Manifest.model_validate(load_yaml(manifest))
        except RequestPackError as e:
            b.schema_errors.append(f"{MANIFEST_NAME}: {e}")
        except ValidationError as e:
            b.schema_errors.append(f"{MANIFEST_NAME}: {_first_error(e)}")
    labels = b.file(LABELS_NAME)
    if labels is not None:
        try:
            b.labels = read_labels(labels)
        except ValueError as e:
            b.schema_errors.append(f"{LABELS_NAME}: {e}")


class _Pred(NamedTuple):
    """What check 4 needs of a prediction: a tenth of a pydantic object's memory."""

    id: str
    top5: tuple[int, ...]


_PREDICTIONS = TypeAdapter(list[Prediction])


def _read_predictions(path: Path, errors: list[str]) -> list[_Pred] | None:
    """Stream predictions.jsonl line by line (bounded lines, bounded count), validated in batches."""
    out: list[_Pred] = []
    batch: list[tuple[int, bytes]] = []

    def flush() -> bool:
        try:
            # One validator call over a JSON array is several times faster than
            # one per line; the per-line pass below only runs to name a bad line.
            preds = _PREDICTIONS.validate_json(b"[" + b",".join(line for _, line in batch) + b"]")
        except ValidationError:
            for lineno, line in batch:
                try:
                    Prediction.model_validate_json(line)
                except ValidationError as e:
                    errors.append(f"{PREDICTIONS_NAME} line {lineno}: {_first_error(e)}")
                    return False
            errors.append(f"{PREDICTIONS_NAME} lines {batch[0][0]}-{batch[-1][0]}: not one JSON object per line")
            return False
        out.extend(_Pred(p.id, tuple(p.top5)) for p in preds)
        batch.clear()
        return True

    try:
        # Count the lines first (C speed, no decoding): too many is refused before validating any.
        chunks = wire.iter_chunks(path, archive.DEFAULT_MAX_ENTRY_BYTES, error=SchemaError, shown=PREDICTIONS_NAME)
        if sum(chunk.count(b"\n") for chunk in chunks) > MAX_SAMPLES:
            errors.append(f"{PREDICTIONS_NAME}: more than {MAX_SAMPLES} predictions")
            return None
        lines = wire.iter_lines(path, archive.DEFAULT_MAX_ENTRY_BYTES, max_line=MAX_LINE_BYTES, error=SchemaError,
                                shown=PREDICTIONS_NAME)
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            if len(out) + len(batch) >= MAX_SAMPLES:
                errors.append(f"{PREDICTIONS_NAME}: more than {MAX_SAMPLES} predictions")
                return None
            batch.append((lineno, line))
            if len(batch) == _BATCH and not flush():
                return None
    except SchemaError as e:
        errors.append(str(e))
        return None
    if batch and not flush():
        return None
    return out


def _check_schemas(b: _Bundle) -> str:
    if b.schema_errors:
        more = f" (+{len(b.schema_errors) - 3} more)" if len(b.schema_errors) > 3 else ""
        raise SchemaError("; ".join(b.schema_errors[:3]) + more)
    n = len(b.predictions or [])
    return f"{', '.join(sorted(b.models))} and {n} predictions valid"


def _statement(b: _Bundle) -> Statement:
    if b.statement is None:
        raise _Skip("no readable statement (see check 1)")
    return b.statement


def _first_error(e: ValidationError) -> str:
    first = e.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]
