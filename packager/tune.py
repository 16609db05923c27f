"""``request-pack tune``: MetaSchedule tuning of a TVM artifact, on the machine it will be evaluated on.

1. the artifact's image, by digest (``pipeline.image_for``: built only when no build of
   this request.yaml exists);
2. ``python -m packager.harness.tune`` in that image, in the runner's sandbox (network
   none, read-only root, the same recorded machine as an evaluation; a board through the
   runner's ``--target``), writing the tuning database to ``OUT``;
3. the database read back as strictly as a stranger's (``harness/tuningdb.read_database``),
   its sha256 computed and the file stored in the content-addressed cache;
4. a derived artifact (``inputs/derive``): the parent plus ``framework.options.tuning_log:
   tuning/<sha256>.json`` (the name pins the bytes, ``inputs/tuning.py``) and
   ``framework.options.target``: the tuned target (the parent's with ``num-cores``), so the
   database applies; the file is copied into it. Its build carries the database beside the
   model, and its results name the database's sha256 and the machine it was tuned on.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packager.cache import Cache
from packager.contract import CONFIG_PATH, MODEL_PATH, OUT_MOUNT
from packager.engine import get_engine
from packager.errors import BadInput, CheckFailed
from packager.harness.tuningdb import DB_NAME, TuningDatabase, read_database, with_cores
from packager.inputs.derive import derive
from packager.inputs.tuning import pinned_name
from packager.manifest import MANIFEST_NAME, Manifest, load_manifest, manifest_path
from packager.pipeline import image_for
from packager.platforms import Platform
from packager.run.runner import RunOptions, run_in_sandbox

log = logging.getLogger(__name__)

TUNE_ENTRYPOINT = ("python3", "-m", "packager.harness.tune")


@dataclass(frozen=True)
class TuneResult:
    database: TuningDatabase
    out: Path  # the run's output directory (database, logs, run.json)
    derived: Path | None  # the tuned artifact's directory; None with derive=False
    image_digest: str
    wall_s: float


def tune(artifact: Path, *, trials: int, seed: int, out: Path, name: str | None = None,
         platform: Platform | None = None, engine: str = "docker", target: str | None = None,
         tvm_target: dict | str | None = None, derive_artifact: bool = True,
         build_root: Path | None = None) -> TuneResult:
    """Steps 1-4 of the module doc."""
    if trials < 1 or seed < 0:
        raise BadInput("--trials must be >= 1 and --seed >= 0", field="--trials")
    artifact_dir = manifest_path(Path(artifact)).parent
    manifest = load_manifest(artifact_dir)
    platform = platform or Platform.native()
    if platform not in manifest.platforms:
        raise BadInput(f"{platform} is not one of its platforms ({', '.join(p.value for p in manifest.platforms)})",
                       file=artifact_dir / MANIFEST_NAME, field="--platform")
    fw = manifest.framework_for(platform)
    if fw.name != "tvm":
        raise BadInput(f"the framework of {platform} is {fw.name} {fw.version}: only a tvm framework can be tuned"
                       f"{' (--platform names another)' if len(manifest.platforms) > 1 else ''}",
                       file=artifact_dir / MANIFEST_NAME, field=framework_key(manifest, platform) + ".name")
    name = name or f"{manifest.name}-tuned"
    if derive_artifact and (artifact_dir.parent / name).exists():
        raise BadInput("already exists: tune derives a new artifact (--name)", file=artifact_dir.parent / name)
    # 1.
    ref = image_for(artifact_dir, platform=platform, engine=engine, build_root=build_root)
    # 2.
    wanted = tvm_target if tvm_target is not None else (fw.options.target or "llvm")
    argv = ["--config", CONFIG_PATH, "--model", MODEL_PATH, "--out", OUT_MOUNT, "--trials", str(trials),
            "--seed", str(seed), "--target", json.dumps(wanted) if isinstance(wanted, dict) else wanted]
    eng = get_engine(engine, target)
    with tempfile.TemporaryDirectory(prefix="request-pack-tune-data-") as empty:
        opts = RunOptions(stage="tune", dataset=Path(empty), out=Path(out), platform=platform)
        result = run_in_sandbox(eng, ref, argv, opts, entrypoint=TUNE_ENTRYPOINT)
    if result.exit_code != 0:
        raise CheckFailed(f"tuning in {ref.image} exited {result.exit_code}; its log: {result.container_log}")
    # 3. the container's output is read like any stranger's file
    db = read_database(Path(out) / DB_NAME, model_sha256=manifest.model.sha256)
    Cache.open(None).put_file(db.path, db.sha256, name=f"{manifest.name} tuning database")
    digest = ref.manifest_digest or ref.config_digest
    log.info("tuned %s: %s", manifest.name, db.describe())
    # 4.
    derived = derive_tuned(artifact_dir, name, db, wanted, platform) if derive_artifact else None
    return TuneResult(db, Path(out), derived, digest, result.wall_s)


def framework_key(manifest: Manifest, platform: Platform) -> str:
    """Where the platform's framework is set: its own ``frameworks.<platform>`` entry, else ``framework``."""
    return f"frameworks.{platform.value}" if platform.value in manifest.frameworks else "framework"


def derive_tuned(parent: Path, name: str, db: TuningDatabase, target: dict | str, platform: Platform | None = None) -> Path:
    """Step 4 alone: ``parent`` plus the database (checked by ``read_database``) as a new artifact.

    ``target`` is the target it was tuned for, without ``num-cores`` (added from ``tuned_on``). The
    database and target go to the tuned platform's framework (``platform``, default this machine's):
    its ``frameworks.<platform>`` entry when it has one, the other platforms' frameworks untouched.
    When it shares ``framework`` with other platforms, the tuned artifact has the tuned platform only:
    the database and target are this machine's, not theirs."""
    manifest = load_manifest(parent)
    platform = platform or Platform.native()
    key = framework_key(manifest, platform)
    rel = pinned_name(db.sha256)
    tuned_target = with_cores(target, int(db.tuned_on["cores"]))
    sets = [f"{key}.options.tuning_log={rel}", f"{key}.options.target={json.dumps(tuned_target)}"]
    if key == "framework" and any(manifest.framework_for(p) == manifest.framework for p in manifest.platforms if p != platform):
        sets.append(f"platforms=[{platform.value}]")
    result = derive(parent, sets, name)
    dest = result.path.parent / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(db.path, dest)
    return result.path.parent
