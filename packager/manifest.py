"""The submission manifest, ``artifacts/<name>/request.yaml``, as a strict pydantic model.

Every model forbids unknown keys and uses strict types, so a typo or a string
where a number belongs is an error that names the field, never a silent default.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from packaging.requirements import Requirement
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from packager import compose, runconfig
from packager.errors import ManifestError
from packager.platforms import (
    BaseSystem,
    Platform,
    base_system,
)
from packager.sections import (
    Author,
    Dataset,
    DebianSystem,
    Device,
    Expectations,
    Framework,
    LocalFileSource,
    Model,
    Name,
    Preprocessing,
    PypiFileSource,
    Python,
    Run,
    Strict,
    Target,
    Task,
    UrlSource,
    omit_empty,
    parse_pinned,
    relative_path,
)
from packager.yamlsafe import load_yaml

MANIFEST_NAME = "request.yaml"
LOCK_NAME = "request.lock"
SCHEMA_VERSION = 1

class Manifest(Strict):
    schema_version: Literal[1] = 1
    name: Name
    version: str = Field(min_length=1)
    authors: list[Author] = Field(min_length=1)
    license: str = Field(min_length=1, description="SPDX licence identifier of the submission")
    description: str = ""
    task: Task
    model: Model
    framework: Framework = Field(description="the framework of every platform not named in frameworks")
    frameworks: dict[str, Framework] = Field(default_factory=dict, description="platform -> its own framework")
    dataset: Dataset
    preprocessing: Preprocessing
    platforms: list[Platform] = Field(min_length=1)
    devices: list[Device] = Field(default_factory=lambda: [Device(kind="cpu")])
    system: DebianSystem = DebianSystem()
    python: Python = Python()
    run: Run = Run()
    runs: dict[str, Run] = Field(default_factory=dict, description="platform -> its own run settings (run: with the "
                                 "platform's overrides merged in)")
    expectations: Expectations = Expectations()
    target: Target = Target()

    @field_validator("platforms", mode="before")
    @classmethod
    def _platforms(cls, v: Any) -> Any:
        # Strict mode refuses str -> enum; parse here so the error names the value.
        if not isinstance(v, list):
            return v
        out = []
        for item in v:
            if not isinstance(item, str):
                raise ValueError(f"{item!r} is not a platform string")
            try:
                out.append(Platform.parse(item))
            except ValueError:
                choices = ", ".join(p.value for p in Platform)
                raise ValueError(f"unknown platform {item!r} (known: {choices})") from None
        if len(set(out)) != len(out):
            raise ValueError("duplicate platform")
        return out

    @model_validator(mode="after")
    def _consistent(self) -> "Manifest":
        if self.model.input.layout != self.preprocessing.layout:
            raise ValueError(
                f"model.input.layout {self.model.input.layout} differs from preprocessing.layout {self.preprocessing.layout}"
            )
        # the input size decides the crop: a lite1 (240) with a 224 preprocessing would fail only at run time
        shape = self.model.input.shape
        spatial = (shape[2:4] if self.model.input.layout == "NCHW" else shape[1:3]) if len(shape) == 4 else []
        if any(isinstance(d, int) and d != self.preprocessing.crop for d in spatial):
            raise ValueError(f"model.input.shape {shape} takes {'x'.join(map(str, spatial))} images, "
                             f"preprocessing.crop is {self.preprocessing.crop}")
        names = {p.value for p in self.platforms}
        for where, keys in (("frameworks", self.frameworks), ("runs", self.runs),
                            ("python.platform_requirements", self.python.platform_requirements),
                            ("system.platform_packages", self.system.platform_packages)):
            for key in keys:
                if key not in names:
                    raise ValueError(f"{where}: {key!r} is not one of platforms ({', '.join(sorted(names))})")
        for platform in self.platforms:
            # a knob the platform's framework would ignore would mislabel every result of that platform
            framework = self.framework_for(platform).name
            applies = runconfig.APPLIES.get(framework, frozenset())
            wrong = sorted(set(self.run_for(platform).knobs) - applies)
            if wrong:
                where = f"runs.{platform.value}.knobs" if platform.value in self.runs else "run.knobs"
                raise ValueError(f"{where}.{wrong[0]}: knob {wrong[0]!r} does not apply to framework {framework!r}, the "
                                 f"framework of {platform.value} (it applies {', '.join(sorted(applies)) or 'none'})")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler):  # type: ignore[no-untyped-def]
        return omit_empty(handler(self), "frameworks", "runs")

    def framework_for(self, platform: Platform) -> Framework:
        return self.frameworks.get(platform.value, self.framework)

    def run_for(self, platform: Platform) -> Run:
        return self.runs.get(platform.value, self.run)

    def run_config_for(self, platform: Platform, asked: runconfig.RunConfig = runconfig.RunConfig()) -> runconfig.RunConfig:
        """The knobs a run of ``platform`` uses: the platform's ``run.knobs`` with every knob ``asked`` sets replaced.

        This is what the harness is given, records in metrics.json and the bundle signs."""
        return self.run_for(platform).run_config().merged(asked)

    def packages_for(self, platform: Platform) -> list[str]:
        return list(self.system.packages) + list(self.system.platform_packages.get(platform.value, ()))

    def for_platform(self, platform: Platform) -> "Manifest":
        """This manifest as one platform sees it: its framework as ``framework``, its run settings as ``run``, its
        requirements and packages folded in.

        The runner hands this to the harness, whose config reads ``framework`` and ``run`` alone.
        """
        python = Python(requirements=[*self.python.requirements, *self.python.platform_requirements.get(platform.value, ())])
        system = self.system.model_copy(update={"packages": self.packages_for(platform), "platform_packages": {}})
        return self.model_copy(update={"framework": self.framework_for(platform), "frameworks": {},
                                       "run": self.run_for(platform), "runs": {},
                                       "python": python, "system": system})

    def canonical_json(self) -> bytes:
        """Stable bytes for hashing: the lock records this digest to detect staleness."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()

    def digest(self) -> str:
        return hashlib.sha256(self.canonical_json()).hexdigest()

    @property
    def base_system(self) -> BaseSystem:
        """The suite's interpreter and toolchain (platforms.BASE_SYSTEMS)."""
        return base_system(self.system.suite)

    def requirements_for(self, platform: Platform) -> list[Requirement]:
        """Pinned requirements whose markers select this platform."""
        env = marker_environment(platform, self.base_system)
        texts = [*self.python.requirements, *self.python.platform_requirements.get(platform.value, ())]
        reqs = [parse_pinned(t) for t in texts]
        return [r for r in reqs if r.marker is None or r.marker.evaluate(env)]


def marker_environment(platform: Platform, system: BaseSystem) -> dict[str, str]:
    """PEP 508 marker values of the image's interpreter on ``platform``: the target decides markers, not the host."""
    return {
        "implementation_name": "cpython",
        "implementation_version": system.python_full,
        "os_name": "posix",
        "platform_machine": platform.uname_machine,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": system.python_full,
        "python_version": system.python,
        "sys_platform": "linux",
    }


# --- loading -------------------------------------------------------------------------


def manifest_path(path: Path) -> Path:
    """Accept an artifact directory or the request.yaml inside it."""
    return path / MANIFEST_NAME if path.is_dir() else path


def load_manifest(path: Path) -> Manifest:
    """Load, resolve its components (docs/components.md) and validate; ManifestError naming the file and field."""
    return load_composed(path)[0]


def load_composed(path: Path) -> tuple[Manifest, compose.Resolved]:
    """The manifest and its resolution: which component and parent files it read, by sha256."""
    file = manifest_path(Path(path))
    data = load_yaml(file)
    if not isinstance(data, dict):
        raise ManifestError("top level must be a mapping", file=file)
    resolved = compose.resolve(file, Manifest)
    try:
        manifest = Manifest.model_validate(resolved.data)
    except ValidationError as e:
        loc = e.errors()[0]["loc"]
        by = resolved.origin_of(tuple(loc)) if resolved.composed else None
        shown = compose.components_root(file.parent)
        where = by if by and not by.startswith("/") else file
        note = f" (resolving {file})" if by and Path(shown, by).resolve() != file.resolve() else ""
        raise ManifestError(_describe(e, resolved.data) + note, file=where, field=_loc(loc)) from None
    _check_files_inside(manifest, file.parent, file)
    return manifest, resolved


def resolved_yaml(manifest: Manifest) -> str:
    """The resolved manifest as YAML, keys in schema order: what ``show`` prints and a bundle carries."""
    return yaml.safe_dump(manifest.model_dump(mode="json"), sort_keys=False, default_flow_style=False,
                          allow_unicode=True, width=100)


def _check_files_inside(manifest: Manifest, root: Path, file: Path) -> None:
    """Symlinks can escape even when the text does not: resolve and compare."""
    checks: list[tuple[str, str]] = []
    if isinstance(manifest.model.source, LocalFileSource):
        checks.append(("model.source.path", manifest.model.source.path))
    if manifest.expectations.reference_outputs:
        checks.append(("expectations.reference_outputs.path", manifest.expectations.reference_outputs.path))
    for key, fw in (("framework", manifest.framework), *((f"frameworks.{p}", f) for p, f in manifest.frameworks.items())):
        if fw.options.tuning_log:
            checks.append((f"{key}.options.tuning_log", fw.options.tuning_log))
    base = root.resolve()
    for field, rel in checks:
        _relative_path_or_error(rel, file, field)
        target = (root / rel).resolve()
        if base != target and base not in target.parents:
            raise ManifestError(f"{rel!r} resolves outside the artifact directory", file=file, field=field)


def _relative_path_or_error(rel: str, file: Path, field: str) -> None:
    try:
        relative_path(rel)
    except ValueError as e:
        raise ManifestError(str(e), file=file, field=field) from None


_SOURCE_KINDS = {"pypi-file": PypiFileSource, "file": LocalFileSource, "url": UrlSource}


def _loc(loc: tuple) -> str:
    parts: list[str] = []
    previous = None
    for item in loc:
        is_tag = previous == "source" and item in _SOURCE_KINDS
        previous = item
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif is_tag or str(item).startswith("function-"):
            continue  # discriminator tags and validator names are noise in a field path
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _describe(e: ValidationError, data: dict) -> str:
    err = e.errors()[0]
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if err["type"] == "extra_forbidden":
        key = str(err["loc"][-1])
        known = _known_keys(err["loc"][:-1])
        close = difflib.get_close_matches(key, known, n=1)
        msg = f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    elif err["type"].endswith("_type") or err["type"] in ("string_type", "int_type", "float_type", "bool_type"):
        msg = f"{msg}, got {type(err.get('input')).__name__} {err.get('input')!r}"[:200]
    extra = len(e.errors()) - 1
    return msg + (f" (and {extra} more error{'s' if extra > 1 else ''})" if extra else "")


def _known_keys(loc: tuple) -> list[str]:
    """Field names of the model at ``loc``, for 'did you mean' suggestions."""
    model: Any = Manifest
    for item in loc:
        if isinstance(item, int) or model is None:
            continue
        fields = getattr(model, "model_fields", None)
        if fields is None:
            return []
        if item in fields:
            ann = fields[item].annotation
            model = _first_model(ann)
        else:
            model = _SOURCE_KINDS.get(item, model)
    return list(getattr(model, "model_fields", {}).keys())


def _first_model(ann: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def json_schema() -> dict:
    schema = Manifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://request-pack.org/schema/request.yaml/v1"
    return schema
