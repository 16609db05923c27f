"""``request-pack evaluate``: one command from an artifact to a verified, signed result bundle.

Steps, each failing with the stage's name and the reason:

1. image: the build record of the artifact, else ``request-pack build`` now (and
   its load into the engine); the image is pinned by digest (``runner.image_from_record``).
   With ``--image host/repo@sha256:…`` nothing is built: the index (or manifest) is read
   from the registry, hashed, and must be the one the build record names; the image is
   copied from the registry into the engine (``engine.registry``);
2. digest check: the engine's image id must be the config digest the record's
   manifest names (``runner.ensure_image``), and the record must match provenance;
3. functional stage: the manifest's ``run.stages.functional`` count and ``min_top1``;
4. full stage;
5. the bundle: build record, provenance, manifest, lock and labels copied beside
   the last stage's outputs, signed (``bundle.sign``) and verified (``bundle.verify``).

``stages`` picks 3, 4 or both: a farm can run the quick functional stage alone and
still gets a signed, verified bundle of it (the statement records the stage).
``resume`` is passed to each stage's run, so a requeued job continues the
predictions.jsonl it left with no lost or duplicated line; a stage it had already
finished (``_finished``) is kept, not run again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from packager.engine import get_engine
from packager.errors import (
    BadInput,
    CheckFailed,
    ImageMismatch,
    ImageNotAvailable,
    RequestPackError,
    StageFailed,
)
from packager.harness.dataset import DatasetSpec, load_dataset
from packager.manifest import (
    LOCK_NAME,
    MANIFEST_NAME,
    Manifest,
    load_manifest,
    resolved_yaml,
)
from packager.platforms import Platform
from packager.runconfig import RunConfig
from packager.repo import default_build_root
from packager.results import METRICS_NAME, PREDICTIONS_NAME, Metrics
from packager.run.runner import (
    LOG_DIR,
    RUN_RECORD,
    ImageRef,
    ProgressFn,
    RunOptions,
    RunResult,
    check_dataset,
    count_lines,
    image_from_record,
    run_stage,
)

log = logging.getLogger(__name__)

STAGES = ("functional", "full")
STAGE_CHOICES = {"functional": ("functional",), "full": ("full",), "all": STAGES}
DEFAULT_KEY_DIR = Path.home() / ".config" / "request-pack" / "keys"


@dataclass(frozen=True)
class StageSummary:
    stage: str
    samples: int
    top1: float
    top5: float
    min_top1: float
    p50_ms: float | None
    images_per_s: float | None
    wall_s: float
    out: Path
    multistream_p99_ms: float | None = None  # per query of 8 images: not comparable with p50_ms (SingleStream)


@dataclass(frozen=True)
class Evaluation:
    artifact: str
    platform: Platform
    image: ImageRef
    stages: tuple[StageSummary, ...]
    bundle: Path
    keyid: str
    verify_seconds: float
    timings: dict[str, float] = field(default_factory=dict)


def _in_stage(stage: str, fn: Callable, *args, **kw):
    """Re-raise a failure of ``fn`` with the stage's name in front, keeping its exit code."""
    try:
        return fn(*args, **kw)
    except StageFailed:
        raise
    except RequestPackError as e:
        e.message = f"stage {stage!r}: {e.message}"
        e.args = (e.message,)
        raise


def stale_build(ref: ImageRef, artifact_dir: Path, manifest_digest: str) -> str | None:
    """Why an existing build is not the one this checkout would make, or None when it is.

    A build is reused only when it came from this request.yaml, this request.lock and this
    checkout's harness: any other harness gives another image, and results signed with it would
    name a digest that ``build`` no longer makes."""
    from packager.cache import sha256_file
    from packager.image.plan import harness_source_sha256  # hashing ~40 files: cheaper than a rebuild check

    if ref.record is None:
        return None  # a pulled image (--image) is pinned by its registry digest, not rebuilt here
    record = json.loads(ref.record.read_text())
    lock_file = artifact_dir / LOCK_NAME
    wanted = {"manifest_sha256": manifest_digest,
              "lock_sha256": sha256_file(lock_file) if lock_file.is_file() else None,
              "harness_sha256": harness_source_sha256()}
    changed = [key.removesuffix("_sha256") for key, value in wanted.items() if record.get(key) != value]
    return f"made from another {', '.join(changed)}" if changed else None


def _image(artifact_dir: Path, manifest_digest: str, name: str, platform: Platform, engine_name: str,
           build_root: Path | None, inputs_from: Path | None = None) -> ImageRef:
    try:
        ref = image_from_record(artifact_dir, name, platform, build_root)
        stale = stale_build(ref, artifact_dir, manifest_digest)
        if stale is None:
            return ref
        log.info("the build of %s is stale (%s): rebuilding", name, stale)
    except ImageNotAvailable:
        log.info("no build of %s for %s yet: building", name, platform)
    from packager.image import (
        build as builder,  # only when needed: building pulls in the whole build chain
    )

    from packager.inputs.lock import fetch

    # a fresh machine's cache lacks what the lock names: fetch it (only from ``inputs_from`` when given)
    fetch(artifact_dir, inputs_from, platforms=[platform])
    opts = builder.BuildOptions(platforms=(platform,), build_root=build_root)
    result = builder.build(artifact_dir, opts)
    builder.load_into(result, engine_name)
    return image_from_record(artifact_dir, name, platform, build_root)


def image_for(artifact: Path, *, platform: Platform | None = None, engine: str = "docker",
              build_root: Path | None = None) -> ImageRef:
    """Step 1 alone: the artifact's image pinned by digest, built (and loaded) only when no build of this
    request.yaml, request.lock and harness exists (``stale_build``). A sweep asks once and keys its points
    by the digest."""
    artifact_dir = artifact.parent if artifact.name == MANIFEST_NAME else artifact
    manifest = load_manifest(artifact)
    build_root = build_root or default_build_root(artifact_dir)
    return _in_stage("image", _image, artifact_dir, manifest.digest(), manifest.name, platform or Platform.native(),
                     engine, build_root)


def _image_from_registry(artifact_dir: Path, name: str, platform: Platform, reference: str,
                         build_root: Path | None) -> ImageRef:
    """Pin the image by the registry's (hashed) manifests; the build record must name the same image.

    The record and provenance are what the bundle's verifier checks the image
    against, so a pulled image still needs them: a farm copies ``build/<name>/``'s
    two small JSON files along with the artifact, not the layout."""
    import dataclasses

    from packager.engine.registry import parse_reference, resolve

    reg = parse_reference(reference)
    pulled = resolve(reg, platform)
    try:
        ref = image_from_record(artifact_dir, name, platform, build_root)
    except ImageNotAvailable as e:
        raise ImageNotAvailable(f"--image needs the build record of {reference} to sign its results: {e.message}",
                                fix=f"copy build/{name}/build-record.json and provenance.json from the builder, or pass --build-root") from e
    if pulled.index_digest is not None and ref.index_digest != pulled.index_digest:
        raise ImageMismatch(f"{reference} is index {pulled.index_digest}; the build record {ref.record} names {ref.index_digest}")
    if ref.manifest_digest and ref.manifest_digest != pulled.manifest_digest:
        raise ImageMismatch(f"{reference}: {platform} manifest {pulled.manifest_digest}; the build record names {ref.manifest_digest}")
    if ref.config_digest != pulled.config_digest:
        raise ImageMismatch(f"{reference}: {platform} config {pulled.config_digest}; the build record names {ref.config_digest}")
    # No layout: the engine gets the image from the registry, never from a local build.
    return dataclasses.replace(ref, oci_layout=None, source=pulled.source, source_args=pulled.skopeo_args())


def _check_provenance(ref: ImageRef) -> None:
    """The record's index digest must be a subject of the build's provenance, when there is one."""
    if ref.record is None:
        return
    prov = ref.record.parent / "provenance.json"
    if not prov.is_file() or not ref.index_digest:
        return
    data = json.loads(prov.read_text())
    digests = {f"sha256:{s.get('digest', {}).get('sha256')}" for s in data.get("subject", [])}
    if ref.index_digest not in digests:
        raise CheckFailed(f"{prov}: no subject is the index {ref.index_digest} of {ref.record}")


def _summary(stage: str, result: RunResult, min_top1: float) -> StageSummary:
    m = Metrics.model_validate_json((result.out / METRICS_NAME).read_text())
    return StageSummary(
        stage=stage, samples=m.accuracy.samples, top1=m.accuracy.top1, top5=m.accuracy.top5, min_top1=min_top1,
        p50_ms=m.latency.p50_s * 1e3 if m.latency else None,
        images_per_s=max((t.images_per_s for t in m.throughput), default=None),
        wall_s=result.wall_s, out=result.out,
        multistream_p99_ms=m.multistream.p99_s * 1e3 if m.multistream else None)


def bundle_files(artifact_dir: Path, ref: ImageRef, dataset: Path, labels_name: str, dest: Path) -> None:
    """What the verifier needs beside the outputs: build record, provenance, manifest, lock, labels."""
    from packager.bundle.statement import (
        LABELS_NAME,
        PROVENANCE_NAME,
    )
    from packager.contract import BUILD_RECORD_NAME

    assert ref.record is not None
    shutil.copyfile(ref.record, dest / BUILD_RECORD_NAME)
    prov = ref.record.parent / "provenance.json"
    if prov.is_file():
        shutil.copyfile(prov, dest / PROVENANCE_NAME)
    # resolved (docs/components.md): the bundle's manifest stands alone, without the components it used
    (dest / MANIFEST_NAME).write_text(resolved_yaml(load_manifest(artifact_dir)))
    lock = artifact_dir / LOCK_NAME
    if lock.is_file():
        shutil.copyfile(lock, dest / LOCK_NAME)
    _bundle_labels(dataset, labels_name, dest, dest / LABELS_NAME)


def _bundle_labels(dataset: Path, labels_name: str, stage_dir: Path, dest: Path) -> None:
    """The ground truth a verifier recomputes accuracy from, as the stage read the data set
    (``Metrics.dataset``): a labels-tsv file is copied; any other layout (an ILSVRC2012 devkit
    ground truth needs its synsets file to mean anything) is written out as ``file<TAB>class_index``
    rows, one per sample id."""
    try:
        record = Metrics.model_validate_json((stage_dir / METRICS_NAME).read_text()).dataset or {}
    except (OSError, ValueError):
        record = {}
    if record.get("layout", "labels-tsv") == "labels-tsv":
        labels = dataset / str(record.get("labels") or labels_name)
        if labels.is_file():
            shutil.copyfile(labels, dest)
        return
    spec = DatasetSpec(dataset, layout=str(record["layout"]), labels=str(record["labels"]),
                       images=str(record.get("images") or "images"), synsets=record.get("synsets"))  # type: ignore[arg-type]
    with dest.open("w", encoding="utf-8") as f:
        f.write("file\tclass_index\n")
        f.writelines(f"{s.id}\t{s.label}\n" for s in load_dataset(spec))


def evaluator_key(key: Path | None) -> tuple[Path, Path]:
    """(private, public): the given key and its ``.pub``, or this machine's evaluator key, made once."""
    from packager.bundle.keys import generate_keypair

    if key is not None:
        pub = key.with_suffix(".pub")
        if not pub.is_file():
            raise BadInput("no public key beside the private key (expected NAME.pub)", file=pub)
        return key, pub
    priv, pub = DEFAULT_KEY_DIR / "evaluator.key", DEFAULT_KEY_DIR / "evaluator.pub"
    if not priv.is_file():
        generate_keypair(DEFAULT_KEY_DIR, "evaluator")
        log.info("made an evaluator key in %s", DEFAULT_KEY_DIR)
    return priv, pub


def check_min_top1(manifest: Manifest, stage: str, top1: float, platform: Platform) -> None:
    """A stage below the platform's ``min_top1`` fails, whoever ran it (this machine or a pod)."""
    min_top1 = getattr(manifest.run_for(platform).stages, stage).min_top1
    if top1 < min_top1:
        raise StageFailed(stage, f"top-1 {top1:.4f} is below the manifest's min_top1 {min_top1}")


def bundle_name(artifact: str, platform: Platform, last_stage: str) -> str:
    """``<artifact>-<platform slug>[-functional].bundle.tar.gz``: a full-stage bundle carries no suffix."""
    suffix = "" if last_stage == "full" else f"-{last_stage}"
    return f"{artifact}-{platform.slug}{suffix}.bundle.tar.gz"


@dataclass(frozen=True)
class Sealed:
    archive: Path
    keyid: str
    verify_seconds: float


def seal(artifact_dir: Path, ref: ImageRef, dataset: Path, labels_name: str, stage_dir: Path, archive: Path, *,
         key: Path | None = None, build_root: Path | None = None) -> Sealed:
    """Step 5: a finished stage's outputs in ``stage_dir`` made a verified bundle at ``archive``.

    ``bundle_files`` beside the outputs, signed with the evaluator's key (``evaluator_key``) and
    verified with its public half against the dataset and the artifact, as any verifier would.
    ``evaluate`` seals its last stage with it; ``farm collect`` seals the outputs of a pod, which
    holds no key, the same way."""
    from packager.bundle.keys import TrustStore, read_passphrase
    from packager.bundle.sign import sign_result_dir
    from packager.bundle.statement import LABELS_NAME
    from packager.bundle.verify import verify_bundle

    bundle_files(artifact_dir, ref, dataset, labels_name, stage_dir)
    priv, pub = evaluator_key(key)
    signed = _in_stage("sign", sign_result_dir, stage_dir, priv,
                       passphrase=read_passphrase(), archive_path=archive)
    # The verifier reads --dataset in the manifest's layout; a data set in another layout is checked
    # against the ground truth the stage read from it, written into the bundle by bundle_files.
    labels = stage_dir / LABELS_NAME
    as_manifest = _read_layout(stage_dir) in (None, "labels-tsv")
    report = _in_stage("verify", verify_bundle, archive, TrustStore.load([pub]),
                       dataset=dataset if as_manifest or not labels.is_file() else None,
                       labels=None if as_manifest or not labels.is_file() else labels,
                       artifact=artifact_dir, build_root=build_root)
    return Sealed(archive, signed.keyid, report.seconds)


def _read_layout(stage_dir: Path) -> str | None:
    try:
        record = Metrics.model_validate_json((stage_dir / METRICS_NAME).read_text()).dataset
    except (OSError, ValueError):
        return None
    return str(record["layout"]) if record and record.get("layout") else None


def _finished(stage_out: Path, ref: ImageRef, run_config: RunConfig = RunConfig()) -> RunResult | None:
    """A stage a requeued job already finished: the run record says exit 0 with this image, metrics.json
    names the same run config, and predictions.jsonl holds exactly the whole lines metrics.json counted
    (nothing torn or added since)."""
    try:
        record = json.loads((stage_out / RUN_RECORD).read_text())
        metrics = Metrics.model_validate_json((stage_out / METRICS_NAME).read_text())
        preds = (stage_out / PREDICTIONS_NAME).read_bytes()
    except (OSError, ValueError):
        return None
    if record.get("exit_code") != 0 or (record.get("image") or {}).get("config_digest") != ref.config_digest:
        return None
    if (metrics.run_config or {}) != run_config.as_dict():
        return None
    if not preds.endswith(b"\n") or count_lines(stage_out / PREDICTIONS_NAME) != metrics.accuracy.samples:
        return None
    return RunResult(0, float(record.get("wall_s", 0.0)), stage_out, stage_out / LOG_DIR / "container.log", record)


def _run_stages(manifest, ref: ImageRef, eng, dataset: Path, out: Path, platform: Platform, devices: tuple[str, ...],
                stages: tuple[str, ...], resume: bool, progress: Callable[[str], ProgressFn] | None,
                timings: dict[str, float], mode: str = "quick", emulated_performance: bool = False,
                dataset_layout: str | None = None, run_config: RunConfig = RunConfig()) -> list[StageSummary]:
    """Steps 3-4: each stage in turn; one below its min_top1 stops the evaluation.

    ``mode`` applies to the full stage: the functional stage is a smoke check on a few images, always quick."""
    summaries = []
    for stage in stages:
        t = time.monotonic()
        stage_out = out / stage
        if stage_out.exists() and not resume:
            shutil.rmtree(stage_out)
        opts = RunOptions(stage=stage, dataset=dataset, out=stage_out, platform=platform, devices=devices, resume=resume,
                          mode=mode if stage == "full" else "quick", emulated_performance=emulated_performance,
                          dataset_layout=dataset_layout, run_config=run_config)
        min_top1 = getattr(manifest.run_for(platform).stages, stage).min_top1
        result = _finished(stage_out, ref, run_config) if resume else None
        if result is not None:
            log.info("%s stage already finished in %s (%.0f s then): kept", stage, stage_out, result.wall_s)
        else:
            result = _in_stage(stage, run_stage, manifest, ref, eng, opts, progress=progress(stage) if progress else None)
        summary = _summary(stage, result, min_top1)
        check_min_top1(manifest, stage, summary.top1, platform)
        summaries.append(summary)
        timings[stage] = time.monotonic() - t
    return summaries


def evaluate(
    artifact: Path,
    dataset: Path,
    out: Path,
    *,
    key: Path | None = None,
    platform: Platform | None = None,
    engine: str = "docker",
    target: str | None = None,
    devices: tuple[str, ...] = (),
    build_root: Path | None = None,
    progress: Callable[[str], ProgressFn] | None = None,
    stages: str = "all",
    resume: bool = False,
    image: str | None = None,
    mode: str = "quick",
    emulated_performance: bool = False,
    inputs_from: Path | None = None,
    dataset_layout: str | None = None,
    run_config: RunConfig = RunConfig(),
) -> Evaluation:
    """Steps 1-5 of the module doc; raises with the failing stage's name.

    ``stages`` is functional, full or all; ``image`` a registry reference by digest; ``inputs_from`` an
    inputs archive or directory, the only source of what the cache lacks (else the lock's locations);
    ``run_config`` the run-time knobs of every stage (the image is the same whatever they are)."""
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    artifact_dir = artifact.parent if artifact.name == MANIFEST_NAME else artifact
    manifest = load_manifest(artifact)
    platform = platform or Platform.native()
    if platform not in manifest.platforms:
        raise BadInput(f"{platform} is not one of the manifest's platforms", field="--platform")
    if not dataset.is_dir():
        raise BadInput("dataset directory does not exist", file=dataset)
    if stages not in STAGE_CHOICES:
        raise BadInput(f"stage {stages!r} is not one of {', '.join(STAGE_CHOICES)}", field="--stage")
    # the platform's run.knobs under the asked ones: what the harness gets, records and the bundle signs
    run_config = manifest.run_config_for(platform, run_config)
    run_config.check_applies(manifest.framework_for(platform).name)  # before anything is built
    build_root = build_root or default_build_root(artifact_dir)
    # The data set's layout and labels, on this machine, before anything is built (errors name the user's path).
    _in_stage("dataset", check_dataset, manifest, RunOptions(stage=STAGE_CHOICES[stages][-1], dataset=dataset, out=out,
                                                             platform=platform, dataset_layout=dataset_layout))

    # 1-2.
    if image is not None:
        ref = _in_stage("image", _image_from_registry, artifact_dir, manifest.name, platform, image, build_root)
    else:
        ref = _in_stage("image", _image, artifact_dir, manifest.digest(), manifest.name, platform, engine, build_root,
                        inputs_from)
    _in_stage("image", _check_provenance, ref)
    eng = _in_stage("image", get_engine, engine, target)
    timings["image"] = time.monotonic() - t0
    with contextlib.closing(eng):  # over ssh: end the transport's ssh sessions while the board still answers
        summaries = _run_stages(manifest, ref, eng, dataset, out, platform, devices, STAGE_CHOICES[stages], resume,
                                progress, timings, mode=mode, emulated_performance=emulated_performance,
                                dataset_layout=dataset_layout, run_config=run_config)

    # 5.
    t = time.monotonic()
    last = STAGE_CHOICES[stages][-1]
    archive = out / bundle_name(manifest.name, platform, last)
    sealed = seal(artifact_dir, ref, dataset, manifest.dataset.labels, out / last, archive, key=key,
                  build_root=build_root)
    timings["sign+verify"] = time.monotonic() - t
    timings["total"] = time.monotonic() - t0
    return Evaluation(manifest.name, platform, ref, tuple(summaries), archive, sealed.keyid, sealed.verify_seconds,
                      timings)
