"""``request-pack derive``: a new artifact as its parent's manifest plus a few overrides, validated and locked.

The manifest text comes from ``compose.derived_manifest`` (``parent:`` and the
``--set`` values); the lock borrows every entry of the parent's lock whose inputs
did not change (``lock(reuse=parent)``), so a derived artifact that changes the
precision resolves no Debian or PyPI package again. A derivation that does not
validate or lock leaves no directory behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from packager import compose
from packager.cache import Cache
from packager.errors import BadInput
from packager.inputs.lock import lock
from packager.inputs.lockfile import LockResult
from packager.manifest import (
    LOCK_NAME,
    MANIFEST_NAME,
    Manifest,
    load_manifest,
    manifest_path,
)


def derive(parent: Path, sets: list[str], name: str, *, dataset: Path | None = None,
           cache: Cache | None = None) -> LockResult:
    """Write ``<parent's folder>/<name>/request.yaml``, validate it and lock it; the lock result."""
    parent_dir = manifest_path(Path(parent)).parent
    load_manifest(parent_dir)  # the parent must resolve before anything is written
    if not (parent_dir / LOCK_NAME).is_file():
        raise BadInput(f"{parent_dir} has no {LOCK_NAME}: lock the parent first", file=parent_dir / LOCK_NAME)
    text = compose.derived_manifest(parent_dir, sets, name)
    target = parent_dir.parent / name
    if target.exists() or target.is_symlink():
        raise BadInput("already exists: derive writes a new artifact directory", file=target)
    target.mkdir()
    try:
        (target / MANIFEST_NAME).write_text(text)
        manifest = load_manifest(target)
        _refuse_shadowed(manifest, sets)
        _copy_local_files(manifest, parent_dir, target)
        return lock(target, dataset=dataset, cache=cache, reuse=parent_dir)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


def _refuse_shadowed(manifest: Manifest, sets: list[str]) -> None:
    """A ``--set run.…`` that a platform's own ``runs:`` entry (often the parent's) replaces would not reach that
    platform, and its results would silently run with other settings than the user asked for."""
    for item in sets:
        key = item.split("=", 1)[0].strip()
        path = key.split(".")
        if len(path) < 2 or path[0] != "run":
            continue
        asked = _field(manifest.run, path[1:])
        for platform, own in manifest.runs.items():
            if (theirs := _field(own, path[1:])) != asked:
                raise BadInput(f"--set {key} does not reach {platform}: its runs: entry sets it to {theirs!r}; set "
                               f"runs.{platform}.{'.'.join(path[1:])} too, or runs=null to drop the per-platform settings",
                               field="--set")


def _field(section: object, path: list[str]) -> object:
    for name in path:
        section = section.get(name) if isinstance(section, dict) else getattr(section, name, None)
    return section


def _copy_local_files(manifest: Manifest, parent_dir: Path, target: Path) -> None:
    """Files the manifest names relative to its directory (a seed, reference outputs, a tuning log) come from the parent."""
    names = [manifest.model.source.path if manifest.model.source.kind == "file" else None,  # type: ignore[union-attr]
             manifest.expectations.reference_outputs.path if manifest.expectations.reference_outputs else None,
             manifest.framework.options.tuning_log,
             *(f.options.tuning_log for f in manifest.frameworks.values())]
    for rel in filter(None, names):
        source, dest = parent_dir / rel, target / rel
        if not dest.exists() and source.is_file() and not source.is_symlink():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
