"""A locked copy of the ``build-small`` fixture artifact, shared by the build and image tests.

Locking runs against the live Debian mirror and PyPI (marker ``network``); the
cache is the normal one, so the base root filesystems (minutes under QEMU) are
made once per machine and reused by every later run.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

from packager.platforms import Platform

DATA = Path(__file__).resolve().parent / "data" / "build-small"
ALL_PLATFORMS = (Platform.AMD64, Platform.ARM64, Platform.ARMV7)


def locked_copy(root: Path, *, model: bytes | None = None) -> Path:
    """``root/artifacts/build-small`` with a fresh lock; ``model`` replaces the model's bytes."""
    from packager.inputs.lock import lock

    art = root / "artifacts" / "build-small"
    shutil.copytree(DATA, art, ignore=shutil.ignore_patterns("request.lock"))
    if model is not None:
        (art / "model.onnx").write_bytes(model)
        text = (art / "request.yaml").read_text()
        text = re.sub(r"(?m)^  sha256: [0-9a-f]{64}$", f"  sha256: {hashlib.sha256(model).hexdigest()}", text, count=1)
        (art / "request.yaml").write_text(text)
    lock(art)
    return art
