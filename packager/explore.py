"""``request-pack explore ARTIFACT --space SPACE.yaml``: a design-space sweep, every point verified on the board.

The space file::

    stage: functional          # functional (default), full or all: what each point evaluates
    run:                       # run-time knobs (packager/runconfig.py): the cross product of the lists
      threads: [1, 2]
      batch: [1, 32]
    build:                     # build-time knobs: one derived artifact (`request-pack derive`) per combination
      precision: [fp32, int8]  #   model: a model component, framework: a framework component, precision
    # or, instead of run/build, a listed subset:
    points:
      - {threads: 1, batch: 1}
      - {threads: 2, batch: 32}

Each point, in order:

1. its image: the parent's for run-time knobs (they never rebuild: one image, by digest, for
   every such point), else its variant's: build-time knobs become ``derive --set`` overrides
   (``model.use``, ``framework.use``, ``model.precision``) of an artifact ``<parent>-<values>``
   beside the parent, derived once and reused while it is exactly that derivation; an image is
   built only if no build of its manifest exists. A variant that does not derive, lock or build
   fails each of its points, once;
2. its key: sha256 of the image index digest, platform, run config, stages and the data set's
   identity (its files' paths and sizes, its label files' bytes, layout, sample count). A key already in the sweep's
   journal (``points.jsonl``) is not run again, done or failed: the sweep resumes after a
   ``kill -9`` where it stopped, losing at most the point that was running, which continues
   from its predictions (``evaluate --resume``) once the orphaned container of the killed run is removed;
3. evaluate (``pipeline.evaluate``: functional stage first, then full when asked; signed and
   verified); a point that fails is recorded as failed with its reason, and not retried
   unless ``--retry-failed``;
4. publish to the board (verify-then-publish) and record the point in the board's sweep group;
5. one line appended to the journal, flushed and fsynced.

A missing environment (engine down) stops the sweep without recording the point: it did not fail.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from packager.errors import BadInput, EnvironmentMissing, RequestPackError
from packager.manifest import load_manifest, manifest_path
from packager.pipeline import STAGE_CHOICES, evaluate, evaluator_key, image_for
from packager.platforms import Platform
from packager.run.runner import ImageRef, ProgressFn, RunOptions, check_dataset
from packager.runconfig import KNOB_HELP, RunConfig, from_mapping
from packager.scoreboard.store import DEFAULT_BOARD, Board
from packager.scoreboard.sweeps import (
    SWEEP_OBJECTIVES,
    Sweep,
    SweepPoint,
    load_sweep,
    record_point,
    record_sweep,
    sweep_id,
)

log = logging.getLogger(__name__)

BUILD_KNOBS = ("model", "framework", "precision")
# Each build-time knob as the `derive --set` key it becomes (docs/components.md): component names for model and framework.
BUILD_SETS = {"model": "model.use", "framework": "framework.use", "precision": "model.precision"}
SPACE_KEYS = {"stage", "run", "build", "points"}
JOURNAL = "points.jsonl"
SWEEP_RECORD = "sweep.json"
MAX_POINTS = 4096


@dataclass(frozen=True)
class Point:
    index: int
    run: RunConfig
    build: Mapping[str, str] = field(default_factory=dict)

    def knobs(self) -> dict[str, Any]:
        return {**{f"build.{k}": v for k, v in self.build.items()}, **{f"run.{k}": v for k, v in self.run.as_dict().items()}}

    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.knobs().items()) or "defaults"


@dataclass(frozen=True)
class Space:
    text: str
    stage: str
    points: tuple[Point, ...]


def _values(name: str, value: Any, where: str) -> list[Any]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise BadInput(f"knob {name!r} has no values", file=Path(where), field=name)
    return values


def _split(entry: Mapping[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A point's keys: ``run.X``/``X`` for run-time knobs, ``build.X`` or a build knob's bare name for build-time."""
    run, build = {}, {}
    for key, value in entry.items():
        name = str(key)
        if name.startswith("build.") or name in BUILD_KNOBS:
            build[name.removeprefix("build.")] = value
        else:
            run[name.removeprefix("run.")] = value
    return run, build


def parse_space(text: str, data: Any, where: str) -> Space:
    """The points of a space file (already parsed) in a stable order; errors name the file and the field."""
    if not isinstance(data, Mapping):
        raise BadInput("a space file is a mapping with run:, build: or points:", file=Path(where))
    unknown = sorted(set(map(str, data)) - SPACE_KEYS)
    if unknown:
        raise BadInput(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(SPACE_KEYS))})", file=Path(where), field=unknown[0])
    stage = str(data.get("stage", "functional"))
    if stage not in STAGE_CHOICES:
        raise BadInput(f"stage {stage!r} is not one of {', '.join(STAGE_CHOICES)}", file=Path(where), field="stage")
    if "points" in data and ("run" in data or "build" in data):
        raise BadInput("give either points: (a listed subset) or run:/build: (a cross product), not both",
                       file=Path(where), field="points")
    combos: list[tuple[dict[str, Any], dict[str, Any]]] = []
    if "points" in data:
        entries = data["points"]
        if not isinstance(entries, list) or not entries or not all(isinstance(e, Mapping) for e in entries):
            raise BadInput("points: must be a non-empty list of mappings knob: value", file=Path(where), field="points")
        if len(entries) > MAX_POINTS:  # a 1 MiB file holds 200,000 "- {}" lines
            raise BadInput(f"points: lists {len(entries)} points (at most {MAX_POINTS})", file=Path(where), field="points")
        combos = [_split(e, where) for e in entries]
    else:
        run_axes = data.get("run") or {}
        build_axes = data.get("build") or {}
        for name, axes in (("run", run_axes), ("build", build_axes)):
            if not isinstance(axes, Mapping):
                raise BadInput(f"{name}: must be a mapping knob: [values]", file=Path(where), field=name)
        names = [("run", str(k)) for k in run_axes] + [("build", str(k)) for k in build_axes]
        lists = [_values(k, run_axes[k], where) for k in run_axes] + [_values(k, build_axes[k], where) for k in build_axes]
        total = 1
        for values in lists:
            total *= len(values)
        if total > MAX_POINTS:
            raise BadInput(f"the cross product has {total} points (at most {MAX_POINTS})", file=Path(where))
        for combo in itertools.product(*lists):
            run = {k: v for (kind, k), v in zip(names, combo) if kind == "run"}
            build = {k: v for (kind, k), v in zip(names, combo) if kind == "build"}
            combos.append((run, build))
    points = []
    for i, (run, build) in enumerate(combos):
        bad = sorted(set(build) - set(BUILD_KNOBS))
        if bad:
            raise BadInput(f"unknown build-time knob {bad[0]!r} (known: {', '.join(BUILD_KNOBS)}; run-time: "
                           f"{', '.join(KNOB_HELP)})", file=Path(where), field=f"build.{bad[0]}")
        points.append(Point(i, from_mapping(run, where=f"{where} point {i + 1}"), {k: str(v) for k, v in build.items()}))
    seen: set[str] = set()  # by canonical JSON: comparing each point with all before it was quadratic
    for p in points:
        key = json.dumps(p.knobs(), sort_keys=True)
        if key in seen:
            raise BadInput(f"point {p.knobs()} is listed twice", file=Path(where), field="points")
        seen.add(key)
    return Space(text, stage, tuple(points))


def load_space(path: Path) -> Space:
    from packager.yamlsafe import read_yaml

    data, raw = read_yaml(path)  # bounded, strict (no aliases, no duplicate keys), UTF-8 checked
    return parse_space(raw.decode("utf-8"), data, str(path))


def dataset_identity(manifest, dataset: Path, stage: str, layout: str | None) -> str:
    """What a point measured on: the data set as a farm job names it (every file's path and size, the label
    files' bytes: ``farm.jobs.dataset_identity``), the layout it is read in and how many samples the stage reads.
    Checked here first, so a data set that cannot be read is an error naming the user's path."""
    from packager.farm.jobs import dataset_identity as files_identity

    spec, n = check_dataset(manifest, RunOptions(stage=stage, dataset=dataset, out=dataset, platform=Platform.native(),
                                                 dataset_layout=layout))
    return f"{spec.layout}:{files_identity(dataset)}:{n}"


def point_key(image: ImageRef | None, platform: Platform, run: RunConfig, stages: str, dataset_id: str,
              build: Mapping[str, str] | None = None) -> str:
    """The point's identity; a variant that never built (``image`` None) is named by its build-time knobs instead."""
    identity = (image.index_digest or image.config_digest) if image is not None else f"unbuilt:{json.dumps(build, sort_keys=True)}"
    return hashlib.sha256(json.dumps([identity, str(platform), run.canonical(), stages, dataset_id]).encode()).hexdigest()


@dataclass(frozen=True)
class Outcome:
    point: Point
    key: str
    status: str  # done | failed | kept (finished in an earlier run of the sweep)
    image_digest: str | None
    bundle: str | None = None
    bundle_digest: str | None = None
    error: str | None = None
    # The figures (FIGURES), each with what produced it: top-1 over ``samples`` images of ``dataset`` (the
    # metrics' note: which images, e.g. "not the validation set"); ``p90_ms`` the SingleStream 90th percentile
    # (one image per query, so the batch knob does not move it); ``images_per_s`` the best Offline rate and
    # ``offline_batch`` the batch size it came at; ``measurement`` the class, mode/execution/driver.
    top1: float | None = None
    samples: int | None = None
    dataset: str | None = None
    p90_ms: float | None = None
    images_per_s: float | None = None
    offline_batch: int | None = None
    measurement: str | None = None
    wall_s: float = 0.0

    def journal_line(self) -> str:
        record = {"key": self.key, "index": self.point.index, "knobs": self.point.knobs(), "status": self.status,
                  "image_digest": self.image_digest, "bundle": self.bundle, "bundle_digest": self.bundle_digest,
                  "error": self.error, **{f: getattr(self, f) for f in FIGURES}, "wall_s": round(self.wall_s, 3)}
        return json.dumps(record, sort_keys=True) + "\n"


FIGURES = ("top1", "samples", "dataset", "p90_ms", "images_per_s", "offline_batch", "measurement")


def read_journal(path: Path) -> dict[str, dict[str, Any]]:
    """Finished points by key; a torn last line (killed mid-write) is ignored, later lines win."""
    out: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return out
    with path.open("r", encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("key"), str):
                out[record["key"]] = record
    return out


def append_journal(path: Path, line: str) -> None:
    """One whole line, synced; after a torn tail (kill -9 mid-write) on a line of its own, so it is not lost too."""
    torn = False
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    with path.open("a", encoding="utf-8") as f:
        f.write(("\n" if torn else "") + line)
        f.flush()
        os.fsync(f.fileno())


@dataclass(frozen=True)
class Options:
    dataset: Path
    out: Path
    board: str = DEFAULT_BOARD
    key: Path | None = None
    platform: Platform | None = None
    engine: str = "docker"
    build_root: Path | None = None
    dataset_layout: str | None = None
    retry_failed: bool = False
    # --farm slurm: the points are Slurm jobs (packager/farm) pulling the image from this registry by digest.
    farm: str | None = None
    registry: str | None = None
    partition: str | None = None
    farm_timeout_s: float = 6 * 3600


@dataclass(frozen=True)
class Result:
    sweep_id: str
    artifact: str
    out: Path
    outcomes: tuple[Outcome, ...]
    image_digests: frozenset[str]
    rebuilds: int
    sweep: Sweep | None
    seconds: float


Reporter = Callable[[str, Point, "Outcome | None"], None]


def explore(artifact: Path, space: Space, opts: Options, *, report: Reporter | None = None,
            progress: Callable[[str], ProgressFn] | None = None) -> Result:
    """Steps 1-5 of the module doc for every point of ``space``; returns the outcomes and the board's group."""
    t0 = time.monotonic()
    artifact_dir = manifest_path(artifact).parent
    manifest = load_manifest(artifact)
    platform = opts.platform or Platform.native()
    if opts.farm not in (None, "slurm"):
        raise BadInput(f"--farm {opts.farm!r}: sweeps run on slurm (or locally, without --farm)", field="--farm")
    if opts.farm and not opts.registry:
        raise BadInput("--farm slurm needs --registry HOST:PORT: the boards pull the image from it by digest",
                       field="--registry")
    groups = _variants(space)
    if len(groups) == 1 and not groups[0][0]:
        # Run-time knobs only: refused before anything is built or written. Variants are checked once derived.
        for p in space.points:
            p.run.check_applies(manifest.framework_for(platform).name, where=f"point {p.index + 1} ({p.label()})")
    last_stage = STAGE_CHOICES[space.stage][-1]
    data_id = dataset_identity(manifest, opts.dataset, last_stage, opts.dataset_layout)
    sid = sweep_id(manifest.name, space.text, data_id)
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / SWEEP_RECORD).write_text(json.dumps({"sweep_id": sid, "artifact": manifest.name, "dataset": data_id,
                                                     "space": space.text}, indent=2, sort_keys=True) + "\n")
    journal = opts.out / JOURNAL
    finished = read_journal(journal)
    from packager.bundle.keys import TrustStore
    from packager.scoreboard.publish import publish

    _, pub = evaluator_key(opts.key)
    trust = TrustStore.load([pub])
    outcomes: list[Outcome] = []
    digests: set[str] = set()
    rebuilds = 0

    def done(event: str, point: Point, outcome: Outcome) -> None:
        outcomes.append(outcome)
        if outcome.image_digest:
            digests.add(outcome.image_digest)
        if report:
            report(event, point, outcome)

    with Board(opts.board) as board:
        record_sweep(board, sid, manifest.name, space.text)
        for build, points in groups:
            # 1. one image per variant (the parent's for run-time knobs); its record is watched for rebuilds.
            try:
                variant_dir = derive_variant(artifact_dir, build) if build else artifact_dir
                framework = load_manifest(variant_dir).framework_for(platform).name
                for p in points:
                    p.run.check_applies(framework, where=f"point {p.index + 1} ({p.label()})")
                ref = image_for(variant_dir, platform=platform, engine=opts.engine, build_root=opts.build_root)
            except EnvironmentMissing:
                raise
            except RequestPackError as e:
                if not build:
                    raise
                # A variant that does not derive, lock or build fails its points, once (keyed by its knobs).
                log.warning("variant %s failed: %s", build, e)
                for point in points:
                    key = point_key(None, platform, point.run, space.stage, data_id, build)
                    if key not in finished:
                        outcome = Outcome(point, key, "failed", None, error=str(e).splitlines()[0][:2000])
                        record_point(board, sid, SweepPoint(key, point.knobs(), "failed", None, None, outcome.error))
                        append_journal(journal, outcome.journal_line())
                    else:
                        outcome = _kept(point, key, finished[key])
                    done(outcome.status, point, outcome)
                continue
            stamp = _record_stamp(ref)
            pending = []
            for point in points:
                key = point_key(ref, platform, point.run, space.stage, data_id)
                seen = finished.get(key)
                if seen is not None and (seen.get("status") == "done" or not opts.retry_failed):
                    outcome = _kept(point, key, seen)
                    done("kept", point, outcome)
                    continue
                pending.append((point, key))
            if opts.farm and pending:
                for point, outcome in _farm_points(variant_dir, pending, platform, space.stage, opts, trust, report):
                    record_point(board, sid, SweepPoint(outcome.key, point.knobs(), outcome.status, outcome.bundle_digest,
                                                        outcome.image_digest, outcome.error))
                    append_journal(journal, outcome.journal_line())
                    done(outcome.status, point, outcome)
                pending = []
            for point, key in pending:
                if report:
                    report("start", point, None)
                outcome = _run_point(variant_dir, point, key, ref, platform, space.stage, opts, progress)
                if outcome.status == "done":
                    published = publish(Path(outcome.bundle), board, trust)  # type: ignore[arg-type]
                    outcome = replace(outcome, bundle_digest=published.bundle_digest)
                record_point(board, sid, SweepPoint(key, point.knobs(), outcome.status, outcome.bundle_digest,
                                                    outcome.image_digest, outcome.error))
                append_journal(journal, outcome.journal_line())
                if _record_stamp(ref) != stamp:
                    rebuilds += 1
                    stamp = _record_stamp(ref)
                done(outcome.status, point, outcome)
        group = load_sweep(board, sid, objectives=SWEEP_OBJECTIVES)
    return Result(sid, manifest.name, opts.out, tuple(outcomes), frozenset(digests), rebuilds, group, time.monotonic() - t0)


def _variants(space: Space) -> list[tuple[dict[str, str], list[Point]]]:
    """The points grouped by their build-time knobs, in first-seen order: one derived image per group."""
    groups: dict[str, tuple[dict[str, str], list[Point]]] = {}
    for p in space.points:
        groups.setdefault(json.dumps(dict(p.build), sort_keys=True), (dict(p.build), []))[1].append(p)
    return list(groups.values())


def variant_name(parent: str, build: Mapping[str, str]) -> str:
    """``<parent>-<values>`` (a manifest name: at most 63 characters; longer ones end in a hash)."""
    values = [re.sub(r"[^a-z0-9._-]+", "-", str(build[k]).lower()).strip("-.") for k in BUILD_KNOBS if k in build]
    name = "-".join([parent, *values])
    if len(name) > 63:
        name = f"{name[:54]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return name


def derive_variant(parent_dir: Path, build: Mapping[str, str]) -> Path:
    """The derived artifact of a build-time point (``request-pack derive``), made once and reused after.

    An existing directory of that name is reused only when it is exactly this derivation. Knobs that leave the
    parent as it is (its own model and precision) are the parent: its image, not a copy under another name."""
    from packager import compose
    from packager.inputs.derive import derive

    sets = [f"{BUILD_SETS[k]}={build[k]}" for k in BUILD_KNOBS if k in build]
    name = variant_name(load_manifest(parent_dir).name, build)
    target = parent_dir.parent / name
    text = compose.derived_manifest(parent_dir, sets, name)
    if same_as_parent(parent_dir, text):
        log.info("variant %s: the parent %s itself", dict(build), parent_dir.name)
        return parent_dir
    if target.exists():
        if manifest_path(target).read_text(encoding="utf-8") != text:
            raise BadInput(f"exists and is not the derivation {' '.join(sets)} of {parent_dir.name}: rename or remove it",
                           file=target)
        log.info("variant %s: reusing %s", dict(build), target)
        return target
    log.info("variant %s: request-pack derive %s %s --name %s", dict(build), parent_dir, " ".join(f"--set {s}" for s in sets), name)
    derive(parent_dir, sets, name)
    return target


def same_as_parent(parent_dir: Path, text: str) -> bool:
    """Whether the derived manifest ``text`` resolves to the parent's, name and description aside.

    Resolved in a scratch sibling of the parent (``parent: ../<name>`` must be one), removed after; a text that
    does not resolve there is not the parent, and ``derive`` reports why with the artifact's own path."""
    import tempfile

    from packager.manifest import MANIFEST_NAME

    ignore = {"name", "description"}
    try:
        with tempfile.TemporaryDirectory(prefix=".explore-variant-", dir=parent_dir.parent) as scratch:
            (Path(scratch) / MANIFEST_NAME).write_text(text, encoding="utf-8")
            variant = load_manifest(Path(scratch))
    except RequestPackError:
        return False
    return variant.model_dump(exclude=ignore) == load_manifest(parent_dir).model_dump(exclude=ignore)


def _record_stamp(ref: ImageRef) -> tuple[int, int] | None:
    """The build record's inode and mtime: any rebuild rewrites it."""
    try:
        st = ref.record.stat() if ref.record else None
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns) if st else None


def _kept(point: Point, key: str, seen: Mapping[str, Any]) -> Outcome:
    return Outcome(point, key, "kept" if seen.get("status") == "done" else "failed", seen.get("image_digest"),
                   seen.get("bundle"), seen.get("bundle_digest"), seen.get("error"),
                   **{f: seen.get(f) for f in FIGURES}, wall_s=float(seen.get("wall_s") or 0.0))


def _run_point(artifact_dir: Path, point: Point, key: str, ref: ImageRef, platform: Platform, stages: str,
               opts: Options, progress: Callable[[str], ProgressFn] | None) -> Outcome:
    """Step 3 for one point: a failure is an outcome, except a missing environment, which stops the sweep."""
    t = time.monotonic()
    out = opts.out / "points" / f"{point.index + 1:03d}-{key[:12]}"
    digest = ref.index_digest or ref.config_digest
    if out.exists():
        # A sweep killed with -9 leaves its point's container running: it would write into the stage it resumes.
        from packager.farm.node import remove_stale_containers

        remove_stale_containers(out, opts.engine)
    try:
        ev = evaluate(artifact_dir, opts.dataset, out, key=opts.key, platform=platform, engine=opts.engine,
                      build_root=opts.build_root, progress=progress, stages=stages, resume=out.exists(),
                      dataset_layout=opts.dataset_layout, run_config=point.run)
    except EnvironmentMissing:
        raise
    except RequestPackError as e:
        log.warning("point %d (%s) failed: %s", point.index + 1, point.label(), e)
        return Outcome(point, key, "failed", digest, error=str(e).splitlines()[0][:2000], wall_s=time.monotonic() - t)
    return Outcome(point, key, "done", ev.image.index_digest or ev.image.config_digest, str(ev.bundle),
                   **stage_figures(ev.stages[-1].out), wall_s=time.monotonic() - t)


def _farm_points(variant_dir: Path, pending: list[tuple[Point, str]], platform: Platform, stages: str, opts: Options,
                 trust: object, report: Reporter | None) -> Iterator[tuple[Point, Outcome]]:
    """Step 3 on Slurm: each pending point one farm job (key: image, platform, stage, devices, data set and run
    config), submitted once, waited for, its bundle verified and published by ``farm collect``'s code."""
    from packager.farm import jobs as farm_jobs
    from packager.farm import slurm
    from packager.farm.base import FarmOptions
    from packager.farm.collect import collect_iter
    from packager.farm.images import ensure_images

    images = ensure_images([variant_dir], str(opts.registry), build_root=opts.build_root, platforms=[platform])
    (job,) = farm_jobs.plan([variant_dir], images, stage=stages, platforms=[platform], dataset=opts.dataset)  # type: ignore[arg-type]
    results = opts.out / "farm"
    farm = slurm.SlurmFarm(FarmOptions(results=results, dataset=opts.dataset, key=opts.key, build_root=opts.build_root,
                                       partition=opts.partition))
    jobs = {}
    for point, key in pending:
        pjob = replace(job, run_config=point.run.canonical())
        jobs[pjob.key] = (point, key)
        if report:
            report("start", point, None)
    for sub in farm.submit([replace(job, run_config=p.run.canonical()) for p, _ in pending]):
        log.info("point %s: farm job %s %s", jobs[sub.job.key][0].label(), sub.job_id or "-", sub.action)
    slurm.wait(results, timeout=opts.farm_timeout_s)
    last = STAGE_CHOICES[stages][-1]
    collected = {c.job_dir.name: c for c in collect_iter(results, opts.board, trust)}  # type: ignore[arg-type]
    for fkey, (point, key) in jobs.items():
        c = collected.get(fkey)
        if c is not None and c.ok and c.bundle is not None:
            yield point, Outcome(point, key, "done", job.image_digest, str(c.bundle), c.bundle_digest,
                                 **stage_figures(c.job_dir / last))
        else:
            why = f"farm job {fkey[:12]}: {c.outcome}: {c.reason}" if c is not None else f"farm job {fkey[:12]}: no result"
            yield point, Outcome(point, key, "failed", job.image_digest, error=why[:2000])


def stage_figures(stage_dir: Path) -> dict[str, Any]:
    """The FIGURES of a finished stage, from its metrics.json (none when it cannot be read)."""
    from packager.results import METRICS_NAME, Metrics

    try:
        m = Metrics.model_validate_json((stage_dir / METRICS_NAME).read_text())
    except (OSError, ValueError):
        return {}
    best = max(m.throughput, key=lambda t: t.images_per_s, default=None)
    return {"top1": m.accuracy.top1, "samples": m.accuracy.samples, "dataset": m.dataset_note,
            "p90_ms": m.latency.p90_s * 1e3 if m.latency else None,
            "images_per_s": best.images_per_s if best else None, "offline_batch": best.batch_size if best else None,
            "measurement": m.measurement.key if m.measurement else None}


SUMMARY_COLUMNS = ("#", "knobs", "status", "class", "top-1 (images)", "SingleStream p90 ms", "Offline img/s (batch)",
                   "wall s", "*")


def summary(result: Result, stage: str, dataset: Path) -> tuple[list[str], list[list[str]], list[str]]:
    """The summary table's columns and rows and the notes that say what produced every figure. The class
    column is left out when every point has the one class: the notes name it."""
    front = {p.key for _, p in iter_frontier(result)}
    classes = sorted({o.measurement for o in result.outcomes if o.measurement})
    columns = [c for c in SUMMARY_COLUMNS if c != "class" or len(classes) > 1]
    rows = []
    for o in result.outcomes:
        row = {"#": str(o.point.index + 1), "knobs": o.point.label(), "status": o.status, "class": o.measurement or "-",
               "top-1 (images)": f"{o.top1:.4f} ({o.samples})" if o.top1 is not None else "-",
               "SingleStream p90 ms": f"{o.p90_ms:.2f}" if o.p90_ms is not None else "-",
               "Offline img/s (batch)": f"{o.images_per_s:.1f} ({o.offline_batch})" if o.images_per_s is not None else "-",
               "wall s": f"{o.wall_s:.1f}", "*": "*" if o.key in front else ""}
        rows.append([row[c] for c in columns])
    notes = sorted({o.dataset for o in result.outcomes if o.dataset})
    return columns, rows, [
        f"{stage} stage on {dataset}: {'; '.join(notes) or 'no finished point'}",
        "top-1: fraction of the stage's images (how many, in brackets) answered right; SingleStream p90: 90th "
        "percentile latency at one image per query, which the batch knob does not change; Offline: the best rate "
        "over the batch sizes run (the batch, in brackets)",
        (f"class (mode/execution/driver) of every point: {classes[0]}" if len(classes) == 1 else
         f"class: mode/execution/driver ({', '.join(classes) or 'none'})") + "; *: on the frontier of its class "
        "on the board, over top-1, SingleStream p90 and the Offline rate",
    ]


def iter_frontier(result: Result) -> Iterator[tuple[str, SweepPoint]]:
    """(measurement class, point) for every point on its class's frontier, in point order."""
    if result.sweep is None:
        return
    for p in result.sweep.points:
        if p.row is not None and result.sweep.on_frontier(p):
            yield p.row.measurement, p
