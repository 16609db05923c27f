"""Where things are in a checkout: the repository root, its template folders, build and sample defaults.

One home for these paths: the builder, the runner, Nix and the CLI all ask here.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE_TEMPLATES = REPO_ROOT / "dockerfiles"
NIX_DIR = REPO_ROOT / "nix"
SAMPLE_ENV = "REQUEST_PACK_SAMPLE"


def default_build_root(artifact_dir: Path) -> Path:
    """``<repo>/build`` for ``<repo>/artifacts/<name>``; else ``build`` beside the artifact directory."""
    artifact_dir = Path(artifact_dir).resolve()
    if artifact_dir.parent.name == "artifacts":
        return artifact_dir.parent.parent / "build"
    return artifact_dir.parent / "build"


def default_sample_dataset() -> Path:
    """$REQUEST_PACK_SAMPLE, else the shared 200-image sample beside the checkout (not the validation set)."""
    env = os.environ.get(SAMPLE_ENV)
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "imagenet-sample"
