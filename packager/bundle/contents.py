"""What ``verify``'s checks share: a bundle's files, read once, bounded, and check 5 (schemas).

``BundleFiles`` holds the parsed statement and files, so 50,000 predictions are
decoded once for checks 3-5. Every read is bounded before it happens
(``packager.wire``; caps here and in ``archive.Limits``, listed in the README); a file
that does not parse is recorded as a schema error for check 5, never raised mid-way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel, TypeAdapter, ValidationError

from packager import wire
from packager.bundle import archive
from packager.bundle.dsse import ENVELOPE_NAME, Envelope
from packager.bundle.labels import read_labels
from packager.bundle.statement import (
    LABELS_NAME,
    MANIFEST_NAME,
    PROVENANCE_NAME,
    BuildRecord,
    ProvenanceStatement,
    Statement,
)
from packager.contract import BUILD_RECORD_NAME
from packager.errors import RequestPackError, SchemaError, SubjectMismatch
from packager.results import (
    METRICS_NAME,
    PREDICTIONS_NAME,
    SYSTEM_NAME,
    Metrics,
    Prediction,
    System,
)

REQUIRED_JSON: dict[str, type[BaseModel]] = {
    METRICS_NAME: Metrics,
    SYSTEM_NAME: System,
    BUILD_RECORD_NAME: BuildRecord,
    PROVENANCE_NAME: ProvenanceStatement,
}
# Caps beyond archive.Limits (README, "Caps"), from a real 50,000-image bundle:
MAX_JSON_BYTES = 8 << 20  # one JSON file; the largest real one, LoadGen's accuracy log, is ~3.3 MB
MAX_SAMPLES = 200_000  # predictions and labels: 4x ImageNet's 50,000 validation images
MAX_LINE_BYTES = 4096  # one line of predictions.jsonl (~210 bytes) or labels.tsv (~50)
_BATCH = 4096  # predictions validated per pydantic call: one call per line is several times slower


class Skip(Exception):
    """A check cannot run because an input is unavailable; not a failure in itself."""


class Pred(NamedTuple):
    """What check 4 needs of a prediction: a tenth of a pydantic object's memory."""

    id: str
    top5: tuple[int, ...]


@dataclass
class BundleFiles:
    """What the checks share: parsed once, so 50,000 predictions are decoded once."""

    root: Path
    envelope: Envelope | None = None
    statement: Statement | None = None
    trusted: bool = False
    models: dict[str, BaseModel] = field(default_factory=dict)
    predictions: list[Pred] | None = None
    labels: dict[str, int] | None = None
    schema_errors: list[str] = field(default_factory=list)
    tree: archive.Tree | None = None

    def file(self, name: str) -> Path | None:
        """A regular file of the bundle, by lstat: a symlink named metrics.json is never followed."""
        assert self.tree is not None  # scanned first, by verify
        return self.tree.files.get(name)

    def statement_or_skip(self) -> Statement:
        if self.statement is None:
            raise Skip("no readable statement (see check 1)")
        return self.statement


def sha256_of(path: Path, shown: str, limit: int = archive.DEFAULT_MAX_ENTRY_BYTES,
              error: wire.Refuse = SubjectMismatch) -> str:
    return wire.sha256_regular(path, limit, error=error, shown=shown)


def json_file(b: BundleFiles, rel: str, path: Path) -> object | None:
    """One JSON file of the bundle, bounded and strict; a refusal is recorded as a schema error."""
    try:
        return wire.load_file(path, MAX_JSON_BYTES, error=SchemaError, shown=rel)
    except SchemaError as e:
        b.schema_errors.append(str(e))
        return None


def first_error(e: ValidationError) -> str:
    first = e.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def load_files(b: BundleFiles) -> None:
    for name, model in REQUIRED_JSON.items():
        path = b.file(name)
        if path is None:
            b.schema_errors.append(f"{name}: missing or not a regular file")
            continue
        data = json_file(b, name, path)
        if data is None:
            continue
        try:
            b.models[name] = model.model_validate(data)
        except ValidationError as e:
            b.schema_errors.append(f"{name}: {first_error(e)}")
    path = b.file(PREDICTIONS_NAME)
    if path is None:
        b.schema_errors.append(f"{PREDICTIONS_NAME}: missing or not a regular file")
    else:
        b.predictions = read_predictions(path, b.schema_errors)
    assert b.tree is not None
    for rel, p in b.tree.files.items():
        # Other JSON files must parse, except empty ones: LoadGen leaves an
        # empty mlperf_log_trace.json when tracing is off, and it claims nothing.
        if rel.endswith(".json") and rel not in REQUIRED_JSON and rel != ENVELOPE_NAME and p.lstat().st_size:
            json_file(b, rel, p)
    manifest = b.file(MANIFEST_NAME)
    if manifest is not None:
        from packager.manifest import Manifest
        from packager.yamlsafe import load_yaml

        try:
            b.models[MANIFEST_NAME] = Manifest.model_validate(load_yaml(manifest))
        except RequestPackError as e:
            b.schema_errors.append(f"{MANIFEST_NAME}: {e}")
        except ValidationError as e:
            b.schema_errors.append(f"{MANIFEST_NAME}: {first_error(e)}")
    labels = b.file(LABELS_NAME)
    if labels is not None:
        try:
            b.labels = read_labels(labels)
        except ValueError as e:
            b.schema_errors.append(f"{LABELS_NAME}: {e}")


_PREDICTIONS = TypeAdapter(list[Prediction])


def read_predictions(path: Path, errors: list[str]) -> list[Pred] | None:
    """Stream predictions.jsonl line by line (bounded lines, bounded count), validated in batches."""
    out: list[Pred] = []
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
                    errors.append(f"{PREDICTIONS_NAME} line {lineno}: {first_error(e)}")
                    return False
            errors.append(f"{PREDICTIONS_NAME} lines {batch[0][0]}-{batch[-1][0]}: not one JSON object per line")
            return False
        out.extend(Pred(p.id, tuple(p.top5)) for p in preds)
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


def check_schemas(b: BundleFiles) -> str:
    """Check 5: every JSON (and the YAML manifest) of the bundle parsed against its schema."""
    if b.schema_errors:
        more = f" (+{len(b.schema_errors) - 3} more)" if len(b.schema_errors) > 3 else ""
        raise SchemaError("; ".join(b.schema_errors[:3]) + more)
    n = len(b.predictions or [])
    return f"{', '.join(sorted(b.models))} and {n} predictions valid"
