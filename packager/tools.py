"""Host tools the chain shells out to (mmdebstrap, skopeo, podman, ...): found on PATH or a typed error.

One helper, so every missing tool is reported the same way: its name and the package that provides it.
"""

from __future__ import annotations

import shutil

from packager.errors import ToolMissing


def need(tool: str, package: str) -> str:
    """The path of ``tool``, or ToolMissing naming the Debian package that provides it."""
    path = shutil.which(tool)
    if path is None:
        raise ToolMissing(f"{tool} is not installed", fix=f"apt-get install -y {package}")
    return path
