"""The rendered Dockerfile: compared with a golden file; template errors are one-line bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from packager.contract import ENTRYPOINT, ENV
from packager.errors import TemplateError
from packager.image.dockerfile import (
    DockerfileContext,
    LayerLine,
    PlatformStage,
    render,
)

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "dockerfile" / "Dockerfile.golden"


def _blob(n: int) -> str:
    return f"oci/blobs/sha256/{n:064x}"


def context() -> DockerfileContext:
    stages = []
    for i, (plat, slug, arch) in enumerate([("linux/amd64", "linux-amd64", "amd64"), ("linux/arm/v7", "linux-arm-v7", "armhf")]):
        stages.append(PlatformStage(plat, slug, arch, (
            LayerLine("base root filesystem", f"Debian bookworm {arch}, 92 packages", _blob(10 * i + 1)),
            LayerLine("runtime wheels", "packaging 24.2", _blob(10 * i + 2)),
            LayerLine("evaluation harness", "packager.harness 0.1.0", _blob(10 * i + 3)),
            LayerLine("model and manifest", "model.onnx sha256 " + "ab" * 32, _blob(10 * i + 4)),
        )))
    return DockerfileContext(
        name="golden", version="1.2.3", lock_sha256="cd" * 32, epoch=1_700_000_000, gzip_level=6,
        platforms=tuple(stages), env=ENV, labels=(("org.opencontainers.image.title", "golden"),),
        user="1000:1000", workdir="/opt/request", entrypoint=ENTRYPOINT,
    )


def test_rendered_dockerfile_matches_golden():
    text = render(context())
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "rendering changed; inspect and rerun with UPDATE_GOLDEN=1"


def test_dockerfile_names_every_layer_in_order():
    text = render(context())
    stage = text.split("FROM scratch AS linux-arm-v7")[1]
    adds = [line.split()[1] for line in stage.splitlines() if line.startswith("ADD ")]
    assert adds == [_blob(11), _blob(12), _blob(13), _blob(14)]
    assert 'ENTRYPOINT ["python3", "-m", "packager.harness"]' in stage
    assert "USER 1000:1000" in stage


def test_template_syntax_error_names_template_and_line(tmp_path):
    (tmp_path / "Dockerfile.j2").write_text("FROM scratch\n{% for x in %}\n")
    with pytest.raises(TemplateError) as err:
        render(context(), template_dir=tmp_path)
    assert err.value.return_code == 2
    assert "Dockerfile.j2" in str(err.value) and "line 2" in str(err.value)


def test_template_with_unknown_variable_is_an_error(tmp_path):
    (tmp_path / "Dockerfile.j2").write_text("FROM {{ base_image }}\n")
    with pytest.raises(TemplateError, match="base_image"):
        render(context(), template_dir=tmp_path)
