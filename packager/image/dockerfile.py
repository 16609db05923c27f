"""Render ``dockerfiles/Dockerfile.j2`` into ``build/<name>/Dockerfile``: the image as a recipe a person reads.

The context is plain data (``DockerfileContext``) so the golden-file test renders
it without building anything; ``render_dockerfile`` fills it from a build.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from packager.contract import APP_DIR, ENTRYPOINT, ENV, RUNNER_UID
from packager.errors import TemplateError
from packager.image.plan import labels_for
from packager.image.writer import oci
from packager.repo import DOCKERFILE_TEMPLATES as TEMPLATE_DIR

TEMPLATE = "Dockerfile.j2"


@dataclass(frozen=True)
class LayerLine:
    title: str
    detail: str
    path: str  # relative to the Dockerfile's directory


@dataclass(frozen=True)
class PlatformStage:
    platform: str
    slug: str
    debian_arch: str
    layers: tuple[LayerLine, ...]


@dataclass(frozen=True)
class DockerfileContext:
    name: str
    version: str
    lock_sha256: str
    epoch: int
    gzip_level: int
    platforms: tuple[PlatformStage, ...]
    env: tuple[tuple[str, str], ...]
    labels: tuple[tuple[str, str], ...]
    user: str
    workdir: str
    entrypoint: tuple[str, ...]


def render(ctx: DockerfileContext, template_dir: Path = TEMPLATE_DIR, template: str = TEMPLATE) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir)), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    data = asdict(ctx)
    data["entrypoint"] = list(ctx.entrypoint)
    try:
        return env.get_template(template).render(**data)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"line {e.lineno}: {e.message}", file=template_dir / template) from None
    except jinja2.TemplateNotFound:
        raise TemplateError("template not found", file=template_dir / template) from None
    except jinja2.UndefinedError as e:
        raise TemplateError(str(e), file=template_dir / template) from None


_TITLES = {"base": "base root filesystem", "wheels": "runtime wheels", "harness": "evaluation harness", "model": "model and manifest"}


def render_dockerfile(path: Path, manifest, lock_sha: str, images, layout: Path, template_dir: Path | None = None) -> None:
    """Write the Dockerfile for a finished build (``images`` are ``build.PlatformImage``)."""

    stages = []
    for img in images:
        lines = tuple(
            LayerLine(_TITLES.get(i.role, i.role), i.detail,
                      os.path.relpath(oci.blob_path(layout, i.digest), path.parent))
            for i in img.layers
        )
        stages.append(PlatformStage(img.platform.value, img.platform.slug, img.platform.debian_arch, lines))
    ctx = DockerfileContext(
        name=manifest.name, version=manifest.version, lock_sha256=lock_sha,
        epoch=images[0].epoch if images else 0, gzip_level=oci.GZIP_LEVEL, platforms=tuple(stages),
        env=ENV, labels=tuple(sorted(labels_for(manifest, lock_sha).items())),
        user=f"{RUNNER_UID}:{RUNNER_UID}", workdir=f"/{APP_DIR}", entrypoint=ENTRYPOINT,
    )
    oci.write_file(path, render(ctx, template_dir or TEMPLATE_DIR).encode("utf-8"))
