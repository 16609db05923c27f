"""Composition: a manifest's ``use:`` sections and ``parent:`` resolved into one plain manifest.

docs/components.md is the specification; this module implements it. The input is
the manifest's source form (``request.yaml`` as written), the output a plain
mapping the manifest schema validates, plus where every field came from (so an
error names the component file or the manifest that set it) and the files read
(so the lock can pin each by sha256).

The schema is handed in (``resolve(file, schema)``) rather than imported: the
manifest module calls this one from ``load_manifest``.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from pydantic import BaseModel

from packager import repo
from packager.errors import ManifestError
from packager.yamlsafe import read_yaml

COMPONENTS_DIR = "components"
MAX_FILES = 32  # component and parent files one manifest may read
MAX_DEPTH = 4  # use: inside use:, parent: of parent:
MAX_ANCESTORS = 4  # how far up from the artifact directory components/ is looked for
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")

# kind -> (folder, the section it provides, the other top-level keys its file may have)
KINDS: dict[str, tuple[str, str | None, frozenset[str]]] = {
    "model": ("models", "model", frozenset({"variants", "default_precision", "expectations", "preprocessing"})),
    "framework": ("frameworks", "framework", frozenset({"python", "system"})),
    "dataset": ("datasets", "dataset", frozenset()),
    "preprocessing": ("preprocessing", "preprocessing", frozenset()),
    "target": ("targets", "target", frozenset()),
    "conversion": ("conversions", "conversion", frozenset()),
    "runtime": ("runtimes", None, frozenset({"python", "system"})),
}
SECTION_KINDS = {"model": "model", "framework": "framework", "dataset": "dataset",
                 "preprocessing": "preprocessing", "target": "target"}
PER_PLATFORM = ("frameworks", "runs")  # platform -> a framework, platform -> run settings
SOURCE_ONLY = ("parent", "runtime")  # keys of the source form that the resolved manifest has not
Origin = dict[tuple, str]


@dataclass(frozen=True)
class Resolved:
    data: dict[str, Any]  # the resolved manifest, as plain data for the schema
    origin: Origin  # field path -> the file (as shown) that set it
    files: dict[str, str] = field(default_factory=dict)  # path relative to the root -> sha256: every file read
    composed: bool = False  # False: the manifest used no use:/parent:, it is its own resolution

    def origin_of(self, loc: tuple) -> str | None:
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.origin:
                return self.origin[loc[:n]]
        return None


def components_root(artifact_dir: Path) -> Path:
    """The nearest ancestor (up to MAX_ANCESTORS) holding components/, else the checkout's."""
    here = Path(artifact_dir).resolve()
    for candidate in [here, *here.parents][: MAX_ANCESTORS + 1]:
        if (candidate / COMPONENTS_DIR).is_dir():
            return candidate
    return repo.REPO_ROOT


class _Reader:
    """Reads manifests and components for one resolution: bounded, each file once, shown relative to root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, str] = {}
        self.cache: dict[Path, Any] = {}

    def shown(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)

    def read(self, path: Path, what: str) -> dict:
        real = path.resolve()
        if real in self.cache:
            return self.cache[real]
        if len(self.files) >= MAX_FILES:
            raise ManifestError(f"more than {MAX_FILES} manifest and component files in one resolution", file=path)
        data, raw = read_yaml(path)
        if not isinstance(data, dict):
            raise ManifestError(f"a {what} must be a mapping at the top level", file=path)
        self.files[self.shown(path)] = hashlib.sha256(raw).hexdigest()  # the bytes parsed, not a second read
        self.cache[real] = data
        return data

    def component(self, kind: str, name: Any, used_by: str, at: str) -> tuple[dict, str]:
        folder = KINDS[kind][0]
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ManifestError(f"use: {name!r} is not a component name ([a-z0-9][a-z0-9._-]*)", file=used_by, field=at)
        home = (self.root / COMPONENTS_DIR / folder).resolve()
        path = self.root / COMPONENTS_DIR / folder / f"{name}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in home.glob("*.yaml")) if home.is_dir() else []
            raise ManifestError(f"no {kind} component {name!r} ({self.shown(path)} does not exist; known: "
                                f"{', '.join(known) or 'none'})", file=used_by, field=at)
        if home not in path.resolve().parents:
            raise ManifestError(f"resolves outside {self.shown(home)}; refused", file=self.shown(path))
        data = self.read(path, f"{kind} component")
        shown = self.shown(path)
        allowed = {"kind", "description"} | KINDS[kind][2] | ({KINDS[kind][1]} if KINDS[kind][1] else set())
        if data.get("kind") != kind:
            raise ManifestError(f"kind is {data.get('kind')!r}, the folder {folder}/ holds kind {kind!r}", file=shown, field="kind")
        for key in data:
            if key not in allowed:
                raise ManifestError(f"unknown key {repr(key)[:80]} in a {kind} component (allowed: {', '.join(sorted(allowed))})",
                                    file=shown, field=str(key)[:80])
        section = KINDS[kind][1]
        if section is not None and not isinstance(data.get(section), dict):
            raise ManifestError(f"a {kind} component needs a mapping {section}:", file=shown, field=section)
        return data, shown


# --- the schema at a path ------------------------------------------------------------------


def _models_in(ann: Any) -> list[type[BaseModel]]:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    out: list[type[BaseModel]] = []
    for arg in getattr(ann, "__args__", ()) or ():
        out += _models_in(arg)
    return out


def _child(node: Any, key: str) -> tuple[bool, Any]:
    """(is ``key`` allowed under ``node``, the schema node below it). A node is a model class,
    ('map', value node) for dict[str, X], or None when anything goes (dict[str, Any], a target dict)."""
    if node is None:
        return True, None
    if isinstance(node, tuple):
        return True, node[1]
    fields = node.model_fields
    if key not in fields:
        return False, None
    ann = fields[key].annotation
    origin = getattr(ann, "__origin__", None)
    if origin is dict:
        value = ann.__args__[1]
        models = _models_in(value)
        return True, ("map", models[0] if len(models) == 1 else None)
    models = _models_in(ann)
    if len(models) == 1:
        return True, models[0]
    if len(models) > 1:
        return True, ("union", tuple(models))
    return True, None


def _allowed(node: Any, key: str) -> tuple[bool, Any, list[str]]:
    if isinstance(node, tuple) and node[0] == "union":
        known = sorted({k for m in node[1] for k in m.model_fields})
        for m in node[1]:
            if key in m.model_fields:
                return (*_child(m, key), known)
        return False, None, known
    ok, below = _child(node, key)
    known = list(node.model_fields) if isinstance(node, type) else []
    return ok, below, known


def _kind_of(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "mapping"
    return type(v).__name__


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


# --- merging -----------------------------------------------------------------------------------


def merge(base: Any, over: Any, *, path: tuple, schema: Any, base_file: str, over_file: str, origin: Origin) -> Any:
    """``over`` on top of ``base`` by the rules of docs/components.md; records origins of what ``over`` set."""
    kb, ko = _kind_of(base), _kind_of(over)
    if kb != "null" and ko != "null" and kb != ko:
        raise ManifestError(f"{ko} {over!r} would replace the {kb} that {base_file} sets: a type change is not allowed"[:300],
                            file=over_file, field=_dotted(path))
    if ko != "mapping" or kb != "mapping" or over.get("kind", base.get("kind")) != base.get("kind"):
        _mark(over, path, over_file, origin)  # replaced whole (a source of another kind, too)
        return over
    out = dict(base)
    for key, value in over.items():
        ok, below, known = _allowed(schema, str(key))
        if not ok:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ManifestError(f"unknown key {repr(key)[:80]}{hint}, overriding {base_file}", file=over_file,
                                field=_dotted((*path, key))[:200])
        if key in out:
            out[key] = merge(out[key], value, path=(*path, key), schema=below, base_file=base_file, over_file=over_file,
                             origin=origin)
        else:
            _mark(value, (*path, key), over_file, origin)
            out[key] = value
    return out


def _mark(value: Any, path: tuple, file: str, origin: Origin) -> None:
    origin[path] = file
    if isinstance(value, dict):
        for k, v in value.items():
            _mark(v, (*path, k), file, origin)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _mark(v, (*path, i), file, origin)


def _prune(origin: Origin, path: tuple) -> None:
    for key in [k for k in origin if k[: len(path)] == path]:
        del origin[key]


# --- resolution ---------------------------------------------------------------------------------


def resolve(file: Path, schema: type[BaseModel]) -> Resolved:
    """The manifest at ``file`` (source form) resolved against its components; ManifestError on any rule broken."""
    file = Path(file)
    reader = _Reader(components_root(file.parent))
    source, src_origin = _source(reader, file, depth=0)
    composed = "parent" in reader.read(file, "manifest") or _uses(source)
    if not composed and "runs" not in source:
        return Resolved(dict(source), src_origin, dict(reader.files), False)
    # runs: alone is resolved too (each entry over run:), yet the manifest stays its own resolution
    return _Resolution(reader, schema, source, src_origin, reader.shown(file)).run(composed)


def _uses(source: dict) -> bool:
    if "runtime" in source:
        return True
    frameworks = source.get("frameworks")
    sections = [source.get(k) for k in SECTION_KINDS] + (list(frameworks.values()) if isinstance(frameworks, dict) else [])
    model = source.get("model")
    if isinstance(model, dict):
        sections.append(model.get("conversion"))
    return any(isinstance(s, dict) and "use" in s for s in sections)


def _source(reader: _Reader, file: Path, depth: int) -> tuple[dict, Origin]:
    """The source form with its ``parent:`` chain merged in (docs/components.md, "Derived artifacts")."""
    data = reader.read(file, "manifest")
    shown = reader.shown(file)
    origin: Origin = {}
    if "parent" not in data:
        _mark(data, (), shown, origin)
        return dict(data), origin
    parent = data["parent"]
    if depth >= MAX_DEPTH:
        raise ManifestError(f"more than {MAX_DEPTH} parent: levels", file=shown, field="parent")
    if not isinstance(parent, str) or not re.fullmatch(r"\.\./[a-z0-9][a-z0-9._-]{0,62}", parent):
        raise ManifestError(f"parent {parent!r} must be ../<artifact> (a sibling artifact directory)", file=shown, field="parent")
    parent_dir = (file.parent / parent).resolve()
    if parent_dir == file.parent.resolve() or parent_dir.parent != file.parent.resolve().parent:
        raise ManifestError(f"parent {parent!r} is not a sibling artifact directory", file=shown, field="parent")
    if not (parent_dir / file.name).is_file():
        raise ManifestError(f"parent {parent!r} has no {file.name}", file=shown, field="parent")
    base, origin = _source(reader, parent_dir / file.name, depth + 1)
    base.pop("parent", None)
    _prune(origin, ("parent",))
    for key, value in data.items():
        if key == "parent":
            continue
        base[key] = _source_merge(base.get(key), value, (key,), shown, origin) if key in base else value
        if key not in base or base[key] is value:
            _prune(origin, (key,))
            _mark(value, (key,), shown, origin)
    return base, origin


def _source_merge(base: Any, over: Any, path: tuple, file: str, origin: Origin) -> Any:
    kb, ko = _kind_of(base), _kind_of(over)
    if kb != "null" and ko != "null" and kb != ko:
        raise ManifestError(f"{ko} would replace the parent's {kb}: a type change is not allowed", file=file, field=_dotted(path))
    if ko != "mapping" or kb != "mapping" or "use" in over:
        _prune(origin, path)
        _mark(over, path, file, origin)
        return over  # a mapping with use: starts afresh from its component
    out = dict(base)
    for key, value in over.items():
        if key in out:
            out[key] = _source_merge(out[key], value, (*path, key), file, origin)
        else:
            _mark(value, (*path, key), file, origin)
            out[key] = value
    return out


class _Resolution:
    def __init__(self, reader: _Reader, schema: type[BaseModel], source: dict, src_origin: Origin, shown: str) -> None:
        self.reader, self.schema, self.source, self.src_origin, self.shown = reader, schema, source, src_origin, shown
        self.origin: Origin = {}
        self.extras: dict[str, tuple[list, list, str]] = {}  # "framework" or a platform -> (requirements, packages, file)

    def who(self, path: tuple) -> str:
        for n in range(len(path), 0, -1):
            if path[:n] in self.src_origin:
                return self.src_origin[path[:n]]
        return self.shown

    def run(self, composed: bool = True) -> Resolved:
        out: dict[str, Any] = {}
        model = self.source.get("model")
        if isinstance(model, dict):  # first: a model component may bring the expectations section
            out["model"] = self.section("model", model, ("model",))
        for key, value in self.source.items():
            if key in SOURCE_ONLY or key in out or (key in PER_PLATFORM and value is None):
                continue  # frameworks: null (runs: null) drops a parent's entries per platform
            if key in SECTION_KINDS and isinstance(value, dict) and "use" in value:
                out[key] = self.section(SECTION_KINDS[key], value, (key,))
            elif key in PER_PLATFORM and isinstance(value, dict):
                value = self.own_platforms(key, value)
                if key == "frameworks":
                    out[key] = {p: self.section("framework", v, (key, p)) if isinstance(v, dict) else v
                                for p, v in value.items()}
                else:
                    out[key] = {p: self.platform_run(p, v) for p, v in value.items()}
            else:
                out[key] = value
                self.copy_origin((key,))
        self.collect(out)
        return Resolved(out, self.origin, dict(self.reader.files), composed)

    def own_platforms(self, key: str, value: dict) -> dict:
        """A parent's entry for a platform this manifest dropped goes with it; its own entries must match."""
        platforms = self.source.get("platforms")
        return {p: v for p, v in value.items()
                if self.who((key, p)) == self.shown or not isinstance(platforms, list) or p in platforms}

    def platform_run(self, platform: str, value: Any) -> Any:
        """``runs.<platform>``: the platform's fields merged over ``run:``, so the resolved entry stands alone."""
        self.copy_origin(("runs", platform))
        shared = self.source.get("run")
        if not isinstance(value, dict) or not (shared is None or isinstance(shared, dict)):
            return value  # the schema names what is wrong
        schema = _allowed(self.schema, "run")[1]
        base = dict(shared or {})
        _mark(base, ("runs", platform), self.who(("run",)), self.origin)
        for k in [k for k in self.src_origin if k[:1] == ("run",)]:
            self.origin[("runs", platform, *k[1:])] = self.src_origin[k]
        return merge(base, value, path=("runs", platform), schema=schema, base_file=self.who(("run",)),
                     over_file=self.who(("runs", platform)), origin=self.origin)

    def copy_origin(self, path: tuple) -> None:
        for k, v in self.src_origin.items():
            if k[: len(path)] == path:
                self.origin[k] = v

    def section(self, kind: str, value: dict, path: tuple) -> dict:
        schema = self.schema
        for key in path:
            schema = _allowed(schema, str(key))[1]
        if "use" not in value:  # a model written in full may still use a conversion component
            self.copy_origin(path)
            return self.conversion_in(dict(value), path, schema) if kind == "model" else value
        who = self.who((*path, "use"))
        comp, shown = self.reader.component(kind, value["use"], who, _dotted((*path, "use")))
        base = comp[KINDS[kind][1]]
        _mark(base, path, shown, self.origin)
        overrides = {k: v for k, v in value.items() if k != "use"}
        if kind == "model":
            base = self.model(comp, shown, base, overrides, path, schema)
        out = merge(base, overrides, path=path, schema=schema, base_file=shown, over_file=self.who(path),
                    origin=self.origin)
        self.reblame(overrides, path)
        if kind == "framework":
            python, system = comp.get("python") or {}, comp.get("system") or {}
            reqs, pkgs = python.get("requirements") or [], system.get("packages") or []
            for name, part, keys in (("python", python, {"requirements"}), ("system", system, {"packages"})):
                if not isinstance(part, dict) or set(part) - keys or not isinstance(part.get(next(iter(keys)), []), list):
                    raise ManifestError(f"{name} must be a mapping with only {next(iter(keys))}: [list]", file=shown, field=name)
            self.extras[path[1] if path[0] == "frameworks" else "framework"] = (reqs, pkgs, shown)
        return out

    def reblame(self, overrides: dict, path: tuple) -> None:
        """Fields the manifest overrode are the manifest's (or its parent's), not the component's."""
        for k in [k for k in self.origin if k[: len(path)] == path and len(k) > len(path) and k[len(path)] in overrides]:
            self.origin[k] = self.who(k)

    def model(self, comp: dict, shown: str, base: dict, overrides: dict, path: tuple, schema: Any) -> dict:
        variants = comp.get("variants") or {}
        if not isinstance(variants, dict):
            raise ManifestError("variants must map a precision to the fields that differ", file=shown, field="variants")
        precision = overrides.get("precision", comp.get("default_precision", base.get("precision")))
        if variants:
            if precision not in variants:
                raise ManifestError(f"model has no {precision!r} variant (known: "
                                    f"{', '.join(map(str, variants))})", file=self.who((*path, "precision")),
                                    field=_dotted((*path, "precision")))
            variant = variants[precision]
            if not isinstance(variant, dict):
                raise ManifestError("a variant must be a mapping of model fields", file=shown, field=f"variants.{precision}")
            base = merge(self.conversion_in(base, path, schema, shown), self.conversion_in(variant, path, schema, shown),
                         path=path, schema=schema, base_file=shown, over_file=shown, origin=self.origin)
        else:
            base = self.conversion_in(base, path, schema, shown)
        if precision is not None:
            base = {**base, "precision": precision}
        expectations = comp.get("expectations")
        if expectations is not None:
            if not isinstance(expectations, dict):
                raise ManifestError("expectations must be a mapping", file=shown, field="expectations")
            _mark(expectations, ("expectations",), shown, self.origin)
            mine = self.source.get("expectations")
            self.source = {**self.source, "expectations": expectations if mine is None else merge(
                expectations, mine, path=("expectations",), schema=_allowed(self.schema, "expectations")[1],
                base_file=shown, over_file=self.who(("expectations",)), origin=self.origin)}
            self.src_origin = {k: v for k, v in self.src_origin.items() if k[:1] != ("expectations",)}
            self.src_origin.update({k: v for k, v in self.origin.items() if k[:1] == ("expectations",)})
        self.model_preprocessing(comp, shown)
        if "conversion" in overrides and isinstance(overrides["conversion"], dict) and "use" in overrides["conversion"]:
            overrides["conversion"] = self.conversion_in({"conversion": overrides["conversion"]}, path, schema)["conversion"]
            base = {k: v for k, v in base.items() if k != "conversion"}  # a conversion with use: starts afresh
        return base

    def model_preprocessing(self, comp: dict, shown: str) -> None:
        """A model's input size decides its preprocessing: the component's is the default of the section,
        the manifest's own preprocessing overrides its fields, or replaces it with a use: of its own."""
        theirs = comp.get("preprocessing")
        if theirs is None:
            return
        if not isinstance(theirs, dict):
            raise ManifestError("preprocessing must be a mapping (use: <name>, or the fields)", file=shown, field="preprocessing")
        mine = self.source.get("preprocessing")
        origin: Origin = {}
        _mark(theirs, ("preprocessing",), shown, origin)
        if mine is not None:
            mine_origin = {k: v for k, v in self.src_origin.items() if k[:1] == ("preprocessing",)}
            combined = _source_merge(theirs, mine, ("preprocessing",), self.who(("preprocessing",)), origin)
            origin.update(mine_origin if isinstance(mine, dict) and "use" in mine else
                          {k: v for k, v in mine_origin.items() if k != ("preprocessing",)})
        else:
            combined = theirs
        self.source = {**self.source, "preprocessing": combined}
        self.src_origin = {**{k: v for k, v in self.src_origin.items() if k[:1] != ("preprocessing",)}, **origin}

    def conversion_in(self, fields: dict, path: tuple, schema: Any, file: str | None = None) -> dict:
        conv = fields.get("conversion")
        if not (isinstance(conv, dict) and "use" in conv):
            return fields
        at = (*path, "conversion")
        who = file or self.who((*at, "use"))
        comp, shown = self.reader.component("conversion", conv["use"], who, _dotted((*at, "use")))
        _mark(comp["conversion"], at, shown, self.origin)
        rest = {k: v for k, v in conv.items() if k != "use"}
        merged = merge(comp["conversion"], rest, path=at, schema=_allowed(schema, "conversion")[1], base_file=shown,
                       over_file=who, origin=self.origin)
        return {**fields, "conversion": merged}

    def collect(self, out: dict) -> None:
        """python.requirements and system.packages: runtime, then the platform's framework, then the manifest."""
        runtime = self.source.get("runtime")
        parts: list[tuple[list, list, str]] = []
        if runtime is not None:
            if not isinstance(runtime, dict) or set(runtime) != {"use"}:
                raise ManifestError("runtime takes only use: <name>", file=self.who(("runtime",)), field="runtime")
            comp, shown = self.reader.component("runtime", runtime["use"], self.who(("runtime",)), "runtime.use")
            python, system = comp.get("python") or {}, comp.get("system") or {}
            parts.append((python.get("requirements") or [], system.get("packages") or [], shown))
        platforms = out.get("platforms")
        if not (parts or self.extras) or not isinstance(platforms, list) or not all(isinstance(p, str) for p in platforms):
            return
        python = dict(out.get("python") or {})
        system = dict(out.get("system") or {})
        mine = (python.get("requirements") or [], system.get("packages") or [], self.who(("python",)))
        reqs: dict[str, list[str]] = {}
        pkgs: dict[str, list[str]] = {}
        for p in platforms:
            fw = self.extras.get(p) or self.extras.get("framework")
            chain = parts + ([fw] if fw else []) + [mine]
            reqs[p] = _union([(r, f) for rs, _, f in chain for r in rs], _requirement_key, "python.requirements")
            pkgs[p] = _union([(k, f) for _, ks, f in chain for k in ks], _package_key, "system.packages")
        python["requirements"], extra_reqs = _split(reqs, platforms)
        system["packages"], extra_pkgs = _split(pkgs, platforms)
        if extra_reqs:
            python["platform_requirements"] = extra_reqs
        if extra_pkgs:
            system["platform_packages"] = extra_pkgs
        out["python"], out["system"] = python, system
        for key, files in (("python", [f for *_, f in parts]), ("system", [f for *_, f in parts])):
            self.origin.setdefault((key,), files[0] if files else self.shown)


def _requirement_key(text: Any) -> tuple[str, str]:
    try:
        req = Requirement(text)
    except (InvalidRequirement, TypeError):
        return (str(text), "")
    return (canonicalize_name(req.name), str(req.marker or ""))


def _package_key(text: Any) -> tuple[str, str]:
    return (str(text).split("=", 1)[0], "")


def _union(items: list[tuple[Any, str]], key: Any, field_name: str) -> list:
    """In order, duplicates dropped; two different pins of one name (same markers) are an error naming both files."""
    seen: dict[tuple, tuple[Any, str]] = {}
    out = []
    for item, file in items:
        k = key(item)
        if k in seen:
            if seen[k][0] != item:
                raise ManifestError(f"{item!r} conflicts with {seen[k][0]!r} from {seen[k][1]}: change or copy the "
                                    "component to change a pin", file=file, field=field_name)
            continue
        seen[k] = (item, file)
        out.append(item)
    return out


def _split(per_platform: dict[str, list], platforms: list[str]) -> tuple[list, dict[str, list]]:
    first = per_platform[platforms[0]]
    common = [x for x in first if all(x in per_platform[p] for p in platforms)]
    extra = {p: [x for x in per_platform[p] if x not in common] for p in platforms}
    return common, {p: v for p, v in extra.items() if v}


# --- derived manifests ----------------------------------------------------------------------------

MAX_SET_VALUE = 4096


def derived_manifest(parent_dir: Path, sets: list[str], name: str) -> str:
    """The text of ``artifacts/<name>/request.yaml``: ``parent:`` plus the ``--set KEY=VALUE`` overrides.

    A ``KEY`` is a dotted path into the source form (``model.precision``, ``framework.use``,
    ``frameworks.linux/arm/v7.use``, ``platforms``); a ``VALUE`` is one YAML flow value.
    """
    import yaml

    if not NAME.fullmatch(name):
        raise ManifestError(f"{name!r} is not an artifact name ([a-z0-9][a-z0-9._-]*)", field="--name")
    data: dict[str, Any] = {"parent": f"../{Path(parent_dir).resolve().name}", "name": name}
    said: list[str] = []
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or not key or len(text) > MAX_SET_VALUE:
            raise ManifestError(f"{item[:80]!r} is not KEY=VALUE (a value of at most {MAX_SET_VALUE} characters)", field="--set")
        path = key.split(".")
        if path[0] in ("name", "parent") or any(not p for p in path):
            raise ManifestError(f"{key!r} cannot be set (name comes from --name, parent from ARTIFACT)", field="--set")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as e:
            raise ManifestError(f"{key}: {text[:80]!r} is not a YAML value: {e}", field="--set") from None
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ManifestError(f"{key!r} sets inside {part!r}, which another --set made a {_kind_of(child)}", field="--set")
            node = child
        node[path[-1]] = value
        said.append(f"{key}={text}")
    if not said:
        raise ManifestError("nothing to derive: give at least one --set KEY=VALUE", field="--set")
    data["description"] = f"{data['parent'][3:]} with " + ", ".join(said)
    header = (f"# Derived from {data['parent'][3:]} by `request-pack derive`: the parent's manifest with these overrides\n"
              "# (docs/components.md, 'Derived artifacts'). `request-pack show` prints it resolved.\n")
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, allow_unicode=True, width=100)
