"""The build plan: what goes into each platform's image, as data another builder can replay.

``load_inputs`` reads the manifest and checks the lock (offline, pure); ``platform_plan``
turns one platform's locked inputs into layer specs (inputs by path and hash), the
image config and history. ``request-pack build`` executes the plan with
``writer.ociplan``; ``request-pack nix`` hands the same plan to the Nix sandbox.
"""

from __future__ import annotations

import ast
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from packager import __version__
from packager.cache import Cache
from packager.contract import (
    APP_DIR,
    CONFIG_PATH,
    ENTRYPOINT,
    ENV,
    MODEL_PATH,
    RUNNER_UID,
)
from packager.errors import BadInput
from packager.image.rootfs import Deb, Rootfs
from packager.image.writer import oci
from packager.inputs.lock import check_frozen
from packager.inputs.lockfile import Lock
from packager.inputs.tuning import cache_tuning_logs, tuning_log_of
from packager.manifest import LOCK_NAME, Manifest, load_manifest, manifest_path
from packager.platforms import BaseSystem, Platform, base_system

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Inputs:
    """An artifact's checked inputs: its manifest and a lock that matches it, with every locked file cached."""

    manifest: Manifest
    lock: Lock
    lock_path: Path
    lock_sha256: str
    platforms: tuple[Platform, ...]
    cache: Cache


def templates_beside(harness_root: Path) -> Path | None:
    """The Dockerfile templates of the source tree ``harness_root`` belongs to (an archive's carries them), or None.

    The Dockerfile is in no image, but the lock records its template's sha256 and a build refuses a
    stale lock: another checkout rebuilds an archived lock with the template it was locked with.
    """
    d = Path(harness_root).parent / "dockerfiles"
    return d if d.is_dir() else None


def load_inputs(artifact_dir: Path, platforms: tuple[Platform, ...] = (), cache_root: Path | None = None,
                template_dir: Path | None = None) -> Inputs:
    """The manifest, and its lock checked offline (never resolves, never builds) for ``platforms``."""
    artifact_dir = Path(artifact_dir)
    manifest = load_manifest(artifact_dir)
    mdir = manifest_path(artifact_dir).parent
    chosen = list(platforms) or list(manifest.platforms)
    for p in chosen:
        if p not in manifest.platforms:
            raise BadInput(f"{p} is not one of the manifest's platforms ({', '.join(x.value for x in manifest.platforms)})",
                           file=manifest_path(artifact_dir), field="platforms")
    cache = Cache.open(cache_root)
    lock_path = mdir / LOCK_NAME
    lock = check_frozen(manifest, lock_path, cache, chosen, template_dir=template_dir).lock
    cache_tuning_logs(manifest, mdir, cache, chosen)
    return Inputs(manifest, lock, lock_path, hashlib.sha256(lock_path.read_bytes()).hexdigest(), tuple(chosen), cache)


def deb_epoch(paths: list[Path]) -> int:
    """SOURCE_DATE_EPOCH of an image: the newest .deb's ar member time (its package build time).

    Derived from the locked inputs, so it is the same everywhere; and no file in
    the base is newer, so clamping never rewrites a packaged file's mtime.
    """
    newest = 0
    for p in paths:
        with open(p, "rb") as f:
            head = f.read(8 + 60)
        if head[:8] != b"!<arch>\n":
            raise BadInput("not a Debian package (ar archive)", file=p)
        newest = max(newest, int(head[8 + 16: 8 + 28].strip() or b"0"))
    return newest


def system_of(lock: Lock, platform: Platform) -> BaseSystem:
    """The base system (suite, Python) a platform's image is built on: the one its .debs were locked from."""
    return base_system(lock.platforms[platform.value].debian.suite)


def debs_of(lock: Lock, platform: Platform) -> list[Deb]:
    return [Deb(d.name, d.version, d.architecture, d.filename, d.sha256, d.size)
            for d in lock.platforms[platform.value].debian.packages]


def platform_epoch(lock: Lock, platform: Platform, cache: Cache) -> tuple[list[Deb], int]:
    """The platform's locked .debs and its SOURCE_DATE_EPOCH (the environment's, else ``deb_epoch``)."""
    debs = debs_of(lock, platform)
    paths = [cache.path_of(d.sha256, size=d.size, name=d.filename) for d in debs]
    return debs, int(os.environ.get("SOURCE_DATE_EPOCH") or deb_epoch(paths))


def harness_version(root: Path = PACKAGE_ROOT) -> str:
    """``__version__`` of the request-pack whose harness is at ``root`` (it names the layers in the image's history)."""
    if root == PACKAGE_ROOT:
        return __version__
    for node in ast.parse((root / "__init__.py").read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets) \
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return node.value.value
    raise BadInput("sets no __version__ string", file=root / "__init__.py")


def harness_files(root: Path = PACKAGE_ROOT) -> list[tuple[Path, str]]:
    """``packager/harness`` and the package modules it imports, found by reading its imports.

    The harness must run without the rest of the chain (engines, signing, web),
    so only what it actually imports goes into the image.
    """
    wanted: set[Path] = {root / "__init__.py"}
    todo = sorted((root / "harness").rglob("*.py"))
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        wanted.add(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            for mod in _imported_modules(node, path, root):
                target = root.joinpath(*mod) if mod else root
                for cand in (target.with_suffix(".py"), target / "__init__.py"):
                    if cand.is_file() and cand not in seen:
                        todo.append(cand)
    return [(p, f"{APP_DIR}/packager/{p.relative_to(root).as_posix()}") for p in sorted(wanted)]


def harness_source_sha256(root: Path = PACKAGE_ROOT) -> str:
    """One digest of the files the harness layer is made from (their image paths and bytes).

    The build record keeps it so that a later run can tell whether an existing build still holds
    this checkout's harness: the manifest and the lock alone do not say so."""
    h = hashlib.sha256()
    for src, dest in harness_files(root):
        h.update(f"{dest}\0{hashlib.sha256(src.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def _imported_modules(node: ast.AST, path: Path, root: Path) -> list[tuple[str, ...]]:
    """Module paths inside ``packager`` (as parts) that an import node names."""
    if isinstance(node, ast.Import):
        return [tuple(a.name.split(".")[1:]) for a in node.names if a.name.split(".")[0] == "packager"]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level == 0:
        if not node.module or node.module.split(".")[0] != "packager":
            return []
        base = tuple(node.module.split(".")[1:])
    else:
        pkg = path.parent.relative_to(root).parts
        if node.level - 1 > len(pkg):
            return []
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = pkg + tuple((node.module or "").split(".")) if node.module else pkg
    return [base] + [base + (a.name,) for a in node.names]


def platform_plan(lock: Lock, manifest: Manifest, platform: Platform, cache: Cache, epoch: int, rootfs: Rootfs,
                  lock_sha: str, harness_root: Path = PACKAGE_ROOT) -> dict:
    """One platform of the plan: layer specs (inputs by path and hash), config and history.

    ``harness_root`` is the ``packager`` package the harness layer is made from: this checkout's,
    or the one an archive carries (``reproduce`` rebuilds a bundle's image with another checkout).
    """
    plat_lock = lock.platforms[platform.value]
    system = system_of(lock, platform)
    scheme = {"site_packages": system.site_packages, "include": f"usr/local/include/{system.python_exe}"}
    wheels = [(cache.path_of(w.sha256, size=w.size, name=w.filename), w.filename) for w in plat_lock.wheels]
    hfiles = [(src, dest, 0o755 if src.stat().st_mode & 0o111 else 0o644) for src, dest in harness_files(harness_root)]
    version = harness_version(harness_root)
    model_path = cache.path_of(lock.model.sha256, name=f"model {lock.model.filename}")
    # the platform's view (its own framework, docs/components.md): the harness reads framework alone
    view = manifest.for_platform(platform).model_dump(mode="json")
    config_sha = cache.put_bytes(oci.canonical_json(view) + b"\n", name=f"{manifest.name} request.json")
    specs = [
        {"role": "base", "kind": "rootfs", "tar": str(rootfs.path), "inputs": {"rootfs": rootfs.sha256},
         "detail": f"Debian {system.suite} {platform.debian_arch}, {rootfs.packages} packages"},
        {"role": "wheels", "kind": "wheels", "wheels": [[str(p), n] for p, n in wheels], **scheme,
         "inputs": {"wheels": sorted(w.sha256 for w in plat_lock.wheels), **scheme},
         "detail": ", ".join(f"{w.name} {w.version}" for w in plat_lock.wheels) or "none"},
        {"role": "harness", "kind": "files", "files": [[str(src), dest, mode] for src, dest, mode in hfiles],
         "inputs": {"files": {dest: [hashlib.sha256(src.read_bytes()).hexdigest(), mode] for src, dest, mode in hfiles}},
         "detail": f"packager.harness {version}"},
        {"role": "model", "kind": "files",
         "files": [[str(model_path), MODEL_PATH, 0o644], [str(cache.object_path(config_sha)), CONFIG_PATH, 0o644]],
         "inputs": {"model": lock.model.sha256, "config": config_sha},
         "detail": f"{lock.model.filename} sha256 {lock.model.sha256}"},
    ]
    tuning = tuning_log_of(manifest, platform)
    if tuning:
        # beside the model: the tvm backend resolves a relative tuning_log against the model's directory
        rel, sha = tuning
        specs[-1]["files"].append([str(cache.path_of(sha, name="tuning database")), f"/{APP_DIR}/{rel}", 0o644])
        specs[-1]["inputs"]["tuning_log"] = sha
        specs[-1]["detail"] += f", tuning database sha256 {sha}"
    config = {
        "User": f"{RUNNER_UID}:{RUNNER_UID}",
        "Env": [f"{k}={v}" for k, v in ENV],
        "Entrypoint": list(ENTRYPOINT),
        "WorkingDir": f"/{APP_DIR}",
        "Labels": labels_for(manifest, lock_sha),
    }
    history = [{"created_by": f"request-pack {version}: {s['role']} layer", "comment": s["detail"]} for s in specs]
    return {"platform": oci.platform_json(platform.os, platform.architecture, platform.variant), "epoch": epoch,
            "layers": specs, "config": config, "history": history}


def labels_for(manifest: Manifest, lock_sha: str) -> dict[str, str]:
    return {
        "org.opencontainers.image.title": manifest.name,
        "org.opencontainers.image.version": manifest.version,
        "org.opencontainers.image.licenses": manifest.license,
        "org.request-pack.lock.sha256": lock_sha,
        "org.request-pack.model.sha256": manifest.model.sha256,
    }
