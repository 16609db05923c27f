"""``request-pack nix``: a pinned Nix derivation per artifact, a second builder that witnesses the first.

``generate()`` renders ``nix/<name>/default.nix`` (self-contained, no nixpkgs)
and ``nix/<name>/dockertools.nix`` (the nixpkgs form) from the lock, with the
templates in ``nix/templates/``. The recipe is ``plan.platform_plan``'s, the
plan ``request-pack build`` executes, with every host path replaced by a
fixed-output store path pinned by sha256:

- the locked .debs, wheels and model (and the model's request.json), read from
  the content-addressed cache: the flat sha256 Nix checks is the lock's hash;
- the base root filesystem tar that ``rootfs.build_rootfs`` made with
  mmdebstrap. Nix cannot run maintainer scripts, so the tar is an input;
  ``nix/witness.py`` checks in the sandbox that each file a locked .deb ships
  is in it with the .deb's bytes;
- Debian's static busybox (the builder, pinned by NAR hash), ``nix/builder.sh``,
  ``nix/witness.py``, ``packager/image/writer/{oci,layers,ociplan}.py`` and the harness
  files, pinned to the bytes they had at generation time.

In the sandbox, busybox unpacks the suite's python3 from the locked amd64 .debs and runs
``python3 -m packager.image.writer.ociplan`` on the plan: the code ``request-pack build``
runs, but another interpreter build, another process, no network and no host
files. Then ``nix/builder.sh`` writes every layer again with GNU tar (the base under
fakeroot) and pigz, and every JSON document with ``builtins.toJSON``, from the
amd64 lock and its ``builder`` section (pigz, fakeroot, libfakeroot), and requires
each to be ours. When both give the same index digest, the image is a function of
the pinned inputs, and our writer writes what those tools write.

``realise()`` runs ``nix-build`` (or ``nix build <flake>#<name>``) and turns
nix's failures into typed errors: a hash mismatch names the input as the lock
does; exit 104 under ``--check`` names the first differing layer and file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from packager.cache import sha256_file
from packager.errors import (
    BadInput,
    CacheMissError,
    NixBuildFailed,
    NixInputMismatch,
    NixNotDeterministic,
    TemplateError,
    ToolMissing,
)
from packager.image.plan import PACKAGE_ROOT, load_inputs, platform_epoch, platform_plan, system_of, templates_beside
from packager.image.rootfs import DPKG_OPTIONS, build_rootfs
from packager.image.writer import oci
from packager.inputs.lockfile import locked_objects
from packager.platforms import BaseSystem, Platform
from packager.repo import NIX_DIR, REPO_ROOT, default_build_root

log = logging.getLogger(__name__)

TEMPLATE_DIR = NIX_DIR / "templates"
SYSTEM = "x86_64-linux"
BUILDER_PLATFORM = Platform.AMD64
BUILDER_LIBDIR = "x86_64-linux-gnu"
BUILDER_LOADER = "ld-linux-x86-64.so.2"
# The libraries of the stdlib's C modules; missing ones only cost those modules, which oci/layers do not use.
BUILDER_DEBS_OPTIONAL = ("libexpat1", "libffi8", "libssl3", "libbz2-1.0", "liblzma5", "libuuid1", "libcrypt1")
BUSYBOX = Path("/bin/busybox")
EXIT_HASH_MISMATCH = 102
EXIT_NOT_DETERMINISTIC = 104
_STORE_NAME_BAD = re.compile(r"[^A-Za-z0-9+\-._?=]")


# GNU tar and its libraries: the second writer of the file layers' tar bytes (nix/builder.sh), never our Python.
GNU_TAR_DEBS = ("tar", "libacl1", "libselinux1", "libpcre2-8-0")
# From the lock's builder section (inputs.lockfile.NIX_BUILDER_PACKAGES and what they pull in): the gzip of
# every layer again (pigz, zlib's deflate) and GNU tar as root for the base layer (fakeroot's faked-sysv, libfakeroot).
NIX_TOOL_DEBS = ("pigz", "fakeroot", "libfakeroot")


def builder_debs(system: BaseSystem) -> tuple[str, ...]:
    """What Debian's interpreter needs to run oci.py/layers.py: itself, its stdlib, libc and zlib (gzip)."""
    exe = system.python_exe  # python3.11
    return ("libc6", "zlib1g", f"{exe}-minimal", f"lib{exe}-minimal", f"lib{exe}-stdlib")


# --- data --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pin:
    """One fixed-output input: what a person calls it, where nix reads it, and its hash."""

    label: str
    store_name: str
    sha256: str
    path: str  # absolute source path (cache object, busybox dir) or repo-relative (``rel``)
    rel: str = ""  # path relative to the repository root, for repository files
    cache_rel: str = ""  # path relative to the cache root, for files outside cas/ (the base tar)


@dataclass(frozen=True)
class NixExpression:
    name: str
    directory: Path
    default_nix: Path
    dockertools_nix: Path
    platforms: tuple[Platform, ...]
    pins: tuple[Pin, ...]

    def pin_for(self, path: str) -> Pin | None:
        """The pin whose source is ``path`` (or whose sha256 is its file name)."""
        for p in self.pins:
            if (path in (p.path, p.rel) or Path(path).name == p.sha256
                    or any(rel and path.endswith("/" + rel) for rel in (p.rel, p.cache_rel))):
                return p
        return None


@dataclass(frozen=True)
class NixBuild:
    out: Path
    index_digest: str
    checked: bool


@dataclass(frozen=True)
class Comparison:
    equal: bool
    nix_index: str
    engine_index: str
    detail: str


# --- NAR hashing (what ``builtins.path { recursive = true; }`` pins) -------------------


def _nar_str(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data + b"\0" * (-len(data) % 8)


def _nar(path: Path, h) -> None:
    st = path.lstat()
    h.update(_nar_str(b"("))
    if path.is_symlink():
        h.update(_nar_str(b"type") + _nar_str(b"symlink") + _nar_str(b"target") + _nar_str(os.readlink(path).encode()))
    elif path.is_file():
        h.update(_nar_str(b"type") + _nar_str(b"regular"))
        if st.st_mode & 0o100:
            h.update(_nar_str(b"executable") + _nar_str(b""))
        h.update(_nar_str(b"contents") + struct.pack("<Q", st.st_size))
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        h.update(b"\0" * (-st.st_size % 8))
    elif path.is_dir():
        h.update(_nar_str(b"type") + _nar_str(b"directory"))
        for child in sorted(path.iterdir(), key=lambda p: p.name.encode()):
            h.update(_nar_str(b"entry") + _nar_str(b"(") + _nar_str(b"name") + _nar_str(child.name.encode()) + _nar_str(b"node"))
            _nar(child, h)
            h.update(_nar_str(b")"))
    else:
        raise ValueError(f"{path}: not a file, directory or symlink")
    h.update(_nar_str(b")"))


def nar_sha256(path: Path) -> str:
    """sha256 of the NAR serialisation of ``path``: the hash nix gives a recursive fixed-output path."""
    h = hashlib.sha256()
    h.update(_nar_str(b"nix-archive-1"))
    _nar(Path(path), h)
    return h.hexdigest()


def store_name(name: str) -> str:
    """A valid store path name (no ``~``, ``:``, leading dot), at most 200 characters."""
    clean = _STORE_NAME_BAD.sub("_", name).lstrip(".") or "input"
    return clean[:200]


# --- busybox -------------------------------------------------------------------------


def is_static_elf(path: Path) -> bool:
    """True when the ELF file has no PT_INTERP, i.e. needs no dynamic loader (and so no host libc)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


def stage_busybox(cache_root: Path, source: Path = BUSYBOX) -> tuple[Path, str]:
    """``<cache>/nix/busybox-<hash>/bin/{busybox,sh}``: busybox picks its applet from argv[0], and nix
    runs a builder with argv[0] = its file name, so the builder must be a file called ``sh``."""
    if not source.is_file():
        raise ToolMissing(f"{source} not found: the Nix builder is Debian's static busybox", fix="apt-get install -y busybox-static")
    if not is_static_elf(source):
        raise ToolMissing(f"{source} is dynamically linked: it would need the host's libc inside the sandbox",
                          fix="apt-get install -y busybox-static")
    file_sha = hashlib.sha256(source.read_bytes()).hexdigest()
    staged = Path(cache_root) / "nix" / f"busybox-{file_sha[:16]}"
    if not (staged / "bin" / "sh").is_symlink():
        tmp = staged.with_name(f".{staged.name}.{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "bin").mkdir(parents=True)
        shutil.copyfile(source, tmp / "bin" / "busybox")
        os.chmod(tmp / "bin" / "busybox", 0o555)
        (tmp / "bin" / "sh").symlink_to("busybox")
        os.chmod(tmp / "bin", 0o555)
        shutil.rmtree(staged, ignore_errors=True)
        os.replace(tmp, staged)
    return staged, nar_sha256(staged)


def _busybox_version() -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "busybox-static"], capture_output=True, text=True, timeout=20)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


# --- rendering ---------------------------------------------------------------------------


def nix_string(s: str) -> str:
    out = s.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return '"' + out.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


def to_nix(value: object, indent: int = 0) -> str:
    """A Nix literal for a JSON-like value. No floats: Nix would round them on the way back to JSON."""
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(value, NixRef):
        return value.binding
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return nix_string(value)
    if isinstance(value, (list, tuple)):
        if not value:
            return "[ ]"
        return "[\n" + "".join(f"{inner}{to_nix(v, indent + 2)}\n" for v in value) + pad + "]"
    if isinstance(value, dict):
        if not value:
            return "{ }"
        body = "".join(f"{inner}{nix_string(str(k))} = {to_nix(v, indent + 2)};\n" for k, v in sorted(value.items()))
        return "{\n" + body + pad + "}"
    raise TypeError(f"no Nix literal for {type(value).__name__} {value!r}")


def render(template: str, context: dict, template_dir: Path = TEMPLATE_DIR) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    env.filters["nix"] = lambda v, indent=0: to_nix(v, indent)
    try:
        return env.get_template(template).render(**context)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"{e.message} (line {e.lineno})", file=template_dir / template) from e
    except jinja2.TemplateError as e:
        raise TemplateError(str(e), file=template_dir / template) from e


# --- generation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NixRef:
    """A Nix expression (an input's binding) where the plan has a host path."""

    binding: str


class _Pins:
    """The fixed-output inputs of one expression, each bound once to a ``let`` name."""

    def __init__(self, cache, labels: dict[str, str]) -> None:
        self.cache = cache
        self.labels = labels  # cas sha256 -> what the lock calls it
        self.pins: list[Pin] = []
        self.bindings: dict[str, str] = {}  # source path -> binding

    def ref(self, path: str | Path, *, name: str, label: str = "") -> NixRef:
        path = str(Path(path).resolve())
        if path in self.bindings:
            return NixRef(self.bindings[path])
        p = Path(path)
        cas = (self.cache.root / "cas" / "sha256").resolve()
        if p.parent.parent == cas:
            pin = Pin(label or self.labels.get(p.name, name), store_name(name), p.name, path)
        elif p.is_relative_to(REPO_ROOT):
            rel = p.relative_to(REPO_ROOT).as_posix()
            pin = Pin(label or rel, store_name("request-pack-" + rel.replace("/", "-")), sha256_file(p), path, rel=rel)
        elif p.is_relative_to(self.cache.root.resolve()):
            rel = p.relative_to(self.cache.root.resolve()).as_posix()
            pin = Pin(label or rel, store_name(name), sha256_file(p), path, cache_rel=rel)
        else:
            raise BadInput(f"build input {path} is neither in the cache ({self.cache.root}) nor in the repository",
                           field="plan")
        binding = f"in{len(self.pins)}"
        self.pins.append(pin)
        self.bindings[path] = binding
        return NixRef(binding)

    def context(self) -> list[dict]:
        return [{"binding": self.bindings[p.path], "label": p.label, "store_name": p.store_name, "sha256": p.sha256,
                 "rel": p.rel, "cache_rel": p.cache_rel} for p in self.pins]


def _with_refs(spec: dict, pins: _Pins, platform: Platform) -> dict:
    """A layer spec of ``plan.platform_plan`` with every host path replaced by its pinned input."""
    out = dict(spec)
    if spec["kind"] == "rootfs":
        out["tar"] = pins.ref(spec["tar"], name=f"rootfs-{platform.debian_arch}-{Path(spec['tar']).stem[:12]}.tar",
                              label=f"{platform.value} base root filesystem (mmdebstrap) {Path(spec['tar']).name}")
    elif spec["kind"] == "wheels":
        out["wheels"] = [[pins.ref(path, name=fname), fname] for path, fname in spec["wheels"]]
    elif spec["kind"] == "files":
        out["files"] = [[pins.ref(src, name=Path(dest).name, label=pins.labels.get(Path(src).name, f"{spec['role']} layer file {dest}")
                                  if not Path(src).resolve().is_relative_to(REPO_ROOT) else ""), dest, mode]
                        for src, dest, mode in spec["files"]]
    else:
        raise BadInput(f"unknown layer kind {spec['kind']!r} in the build plan", field="plan")
    return out


def generate(artifact_dir: Path, *, out_dir: Path | None = None, platforms: tuple[Platform, ...] = (),
             cache_root: Path | None = None, tag: str = "latest", harness_root: Path = PACKAGE_ROOT) -> NixExpression:
    """Write ``<out_dir>/default.nix`` and ``dockertools.nix`` (default ``nix/<name>/``) from the lock.

    The plan is ``plan.platform_plan``'s, the one ``request-pack build`` executes,
    with each cache or repository path replaced by a fixed-output store path of
    the same bytes; the derivation executes it with ``packager/image/writer/ociplan.py``.
    """
    inputs = load_inputs(Path(artifact_dir), platforms, cache_root, templates_beside(harness_root))
    manifest, lock, lock_path, lock_sha = inputs.manifest, inputs.lock, inputs.lock_path, inputs.lock_sha256
    plats, cache = inputs.platforms, inputs.cache
    builder_lock = lock.platforms.get(BUILDER_PLATFORM.value)
    if builder_lock is None:
        raise BadInput(f"the Nix builder runs Python from the {BUILDER_PLATFORM.value} .debs, and the lock has none: "
                       f"lock {BUILDER_PLATFORM.value} too", file=lock_path, field="platforms")
    by_name = {d.name: d for d in builder_lock.debian.packages}
    builder_system = system_of(lock, BUILDER_PLATFORM)
    required = builder_debs(builder_system)
    missing = [n for n in required + GNU_TAR_DEBS if n not in by_name]
    if missing:
        raise BadInput(f"the Nix builder's Python needs {', '.join(missing)} in the {BUILDER_PLATFORM.value} lock "
                       "(add python3 to system.packages)", file=lock_path, field="platforms")
    if lock.builder is None or any(n not in {d.name for d in lock.builder.packages} for n in NIX_TOOL_DEBS):
        raise BadInput(f"the lock has no builder section with {', '.join(NIX_TOOL_DEBS)} (the Nix witness's pigz and "
                       "fakeroot): re-lock with `request-pack lock`", file=lock_path, field="builder")
    pins = _Pins(cache, {o.sha256: o.name for o in locked_objects(lock)})
    python_debs = [pins.ref(cache.object_path(d.sha256), name=d.filename, label=f"{BUILDER_PLATFORM.value} deb {d.filename}")
                   for n in required + BUILDER_DEBS_OPTIONAL if (d := by_name.get(n))]
    tar_debs = [pins.ref(cache.object_path(by_name[n].sha256), name=by_name[n].filename,
                         label=f"{BUILDER_PLATFORM.value} deb {by_name[n].filename}") for n in GNU_TAR_DEBS]
    tools = {d.name: d for d in lock.builder.packages}
    tool_debs = [pins.ref(cache.object_path(tools[n].sha256), name=tools[n].filename,
                          label=f"nix builder deb {tools[n].filename}") for n in NIX_TOOL_DEBS]
    code = {key: pins.ref(REPO_ROOT / rel, name=rel) for key, rel in
            (("oci_py", "packager/image/writer/oci.py"), ("layers_py", "packager/image/writer/layers.py"),
             ("ociplan_py", "packager/image/writer/ociplan.py"),
             ("builder_sh", "nix/builder.sh"), ("tree_py", "nix/tree.py"), ("witness_py", "nix/witness.py"))}
    busybox_dir, busybox_nar = stage_busybox(cache.root)
    plan_platforms, images, witness = [], [], []
    for i, platform in enumerate(plats):
        debs, epoch = platform_epoch(lock, platform, cache)
        rootfs = build_rootfs(platform, debs, cache, epoch, suite=system_of(lock, platform).suite)
        pplan = platform_plan(lock, manifest, platform, cache, epoch, rootfs, lock_sha, harness_root)
        plan_platforms.append({**pplan, "layers": [_with_refs(s, pins, platform) for s in pplan["layers"]]})
        # Every locked .deb is an input too: nix/witness.py checks the base tar's files against them.
        witness.append({"platform": platform.value, "tar": plan_platforms[-1]["layers"][0]["tar"],
                        "debs": [pins.ref(cache.object_path(d.sha256), name=d.filename) for d in debs],
                        "dpkg_options": list(DPKG_OPTIONS)})
        images.append({"index": i, "slug": platform.slug.replace("-", "_"), "created": oci.rfc3339(epoch),
                       "architecture": platform.architecture})
    from packager.image.writer.ociplan import PLAN_VERSION

    plan = {"plan_version": PLAN_VERSION, "tag": tag, "platforms": plan_platforms}
    directory = Path(out_dir) if out_dir else NIX_DIR / manifest.name
    directory.mkdir(parents=True, exist_ok=True)
    inside_repo = directory.resolve() == (NIX_DIR / manifest.name).resolve()
    context = {
        "name": manifest.name,
        "version": manifest.version,
        "lock_rel": _display(lock_path),
        "lock_sha": lock_sha,
        "platform_names": ", ".join(p.value for p in plats),
        "cache_default": nix_string(str(cache.root.resolve())),
        # inside the repo a relative path keeps the expression movable (and works in the flake's store copy)
        "src_default": "../.." if inside_repo else nix_string(str(REPO_ROOT)),
        "busybox": {"version": _busybox_version(), "sha256": busybox_nar, "dirname": busybox_dir.name},
        "builder_arch": BUILDER_PLATFORM.debian_arch,
        "pins": pins.context(),
        "python_debs": [r.binding for r in python_debs],
        "tar_debs": [r.binding for r in tar_debs],
        "tool_debs": [r.binding for r in tool_debs],
        **{k: r.binding for k, r in code.items()},
        "plan": plan,
        "witness": witness,
        "images": images,
        "drv_name": store_name(f"{manifest.name}-{manifest.version}-oci"),
        "system": SYSTEM,
        "builder_libdir": BUILDER_LIBDIR,
        "builder_loader": BUILDER_LOADER,
        "builder_python": builder_system.python_exe,
    }
    default_nix = directory / "default.nix"
    dockertools_nix = directory / "dockertools.nix"
    texts = render("default.nix.j2", context), render("dockertools.nix.j2", context)  # both, before writing either
    oci.write_file(default_nix, texts[0].encode("utf-8"))
    oci.write_file(dockertools_nix, texts[1].encode("utf-8"))
    all_pins = tuple(pins.pins) + (Pin("busybox (Debian busybox-static)", "busybox-static", busybox_nar, str(busybox_dir)),)
    log.info("wrote %s and %s (%d pinned inputs)", default_nix, dockertools_nix, len(all_pins))
    return NixExpression(manifest.name, directory, default_nix, dockertools_nix, tuple(plats), all_pins)


def _display(path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return Path(path).name if Path(path).parent.name else str(path)


# --- building ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NixOptions:
    platforms: tuple[Platform, ...] = ()
    out_dir: Path | None = None
    cache_root: Path | None = None
    build: bool = False
    check: bool = False
    flake: Path | None = None  # build ``<flake>#<name>`` with ``nix build`` instead of ``nix-build <dir>``
    compare_with: Path | None = None  # an engine-built OCI layout (default build/<name>/oci when present)


@dataclass(frozen=True)
class NixReport:
    expression: NixExpression
    build: NixBuild | None
    comparison: Comparison | None


def run(artifact_dir: Path, opts: NixOptions = NixOptions()) -> NixReport:
    """Generate the expressions; with ``build``/``check``, build them and compare with the engine's layout."""
    expr = generate(artifact_dir, out_dir=opts.out_dir, platforms=opts.platforms, cache_root=opts.cache_root)
    if not (opts.build or opts.check):
        return NixReport(expr, None, None)
    result = realise(expr, flake=opts.flake)
    if opts.check:
        result = realise(expr, check=True, flake=opts.flake)
    engine = opts.compare_with
    if engine is None:
        candidate = default_build_root(Path(artifact_dir)) / expr.name / "oci"
        engine = candidate if (candidate / "index.json").is_file() else None
    comparison = compare_layouts(result.out, engine) if engine is not None else None
    return NixReport(expr, result, comparison)


def realise(expr: NixExpression, *, check: bool = False, flake: Path | None = None, cache: Path | None = None) -> NixBuild:
    """Realise (or with ``check``, rebuild and compare) the self-contained image; return its store path and index.

    Named after Nix's word for building a derivation, and so as not to read like ``image.build.build``.
    """
    if shutil.which("nix-build") is None:
        raise ToolMissing("nix-build is not installed", fix="scripts/setup.sh (apt-get install -y nix-bin busybox-static)")
    if flake is not None and cache is not None:
        raise BadInput("a flake's outputs take no arguments: build another cache with nix-build (no --flake)", field="--flake")
    extra = ["--arg", "cache", nix_string(str(cache))] if cache is not None else []
    if flake is not None:
        argv = ["nix", "build", f"path:{Path(flake).resolve()}#{expr.name}", "--no-link", "--json", *extra]
        argv += ["--rebuild", "--keep-failed"] if check else []
    else:
        argv = ["nix-build", str(expr.default_nix), "--no-out-link", *extra]
        argv += ["--check", "--keep-failed"] if check else []
    log.info("+ %s", " ".join(argv))
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise _error_for(proc.returncode, proc.stderr, expr, check)
    if flake is not None:
        out = Path(json.loads(proc.stdout)[0]["outputs"]["out"])
    else:
        out = Path(proc.stdout.strip().splitlines()[-1])
    return NixBuild(out, layout_index(out), check)


_MISMATCH = re.compile(r"store path mismatch in \(possibly filtered\) path added from '([^']+)'")
_MISSING = re.compile(r"(?:getting status of|opening file) '([^']+)': No such file or directory")
_NOT_DET = re.compile(r"may not be deterministic: output '([^']+)' differs(?: from '([^']+)')?")
_FOD = re.compile(r"hash mismatch in fixed-output derivation '([^']+)'")


def _error_for(code: int, stderr: str, expr: NixExpression, check: bool) -> Exception:
    """nix's failure as one of our errors, naming the input or the first differing file."""
    if m := _MISMATCH.search(stderr):
        path = m.group(1)
        pin = expr.pin_for(path)
        label = pin.label if pin else path
        actual = nar_sha256(Path(path)) if Path(path).is_dir() else sha256_file(Path(path))
        hint = ("the file changed since `request-pack nix` pinned it: regenerate" if pin and pin.rel
                else "re-fetch it with `request-pack fetch` (the cache holds other bytes than the lock pins)")
        return NixInputMismatch(label, path, pin.sha256 if pin else "(see nix/<name>/default.nix)", actual, hint=hint)
    if m := _FOD.search(stderr):
        return NixInputMismatch(m.group(1), m.group(1), "the pinned hash", "other bytes", hint=_tail(stderr))
    if m := _MISSING.search(stderr):
        pin = expr.pin_for(m.group(1))
        return CacheMissError(f"nix input {pin.label if pin else m.group(1)} is missing ({m.group(1)}): "
                              "run `request-pack fetch`, or regenerate with `request-pack nix`")
    if code == EXIT_NOT_DETERMINISTIC or _NOT_DET.search(stderr):
        m = _NOT_DET.search(stderr)
        detail = "no output paths in nix's message"
        if m:
            first = Path(m.group(1))
            second = Path(m.group(2)) if m.group(2) else first.with_name(first.name + ".check")
            detail = compare_layouts(second, first).detail if second.exists() else f"{first} differs from its rebuild"
        return NixNotDeterministic(f"{expr.name}: nix-build --check rebuilt the image and got other bytes: {detail}")
    return NixBuildFailed(f"nix {'check' if check else 'build'} of {expr.default_nix} failed (exit {code}): {_tail(stderr)}")


def _tail(text: str, lines: int = 6) -> str:
    return " | ".join(ln.strip() for ln in text.strip().splitlines()[-lines:])




# --- comparing two OCI layouts ----------------------------------------------------------------------


def layout_index(layout: Path) -> str:
    """Digest of the image index an OCI layout's top-level index.json names."""
    try:
        top = json.loads((Path(layout) / "index.json").read_text())
        return top["manifests"][0]["digest"]
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise NixBuildFailed(f"{layout} is not an OCI layout with an image index: {e}") from e


def compare_layouts(first: Path, second: Path) -> Comparison:
    """Equal index digests, or the first differing platform, layer and file (``first`` = nix, ``second`` = engine).

    A ``first`` built for some of ``second``'s platforms (``nix --platform P`` beside a full engine build)
    is compared like with like: platform by platform, by image manifest digest. Each manifest names
    only its own config and layers, so it does not depend on which other platforms share the index.
    """
    a_idx, b_idx = layout_index(first), layout_index(second)
    if a_idx == b_idx:
        return Comparison(True, a_idx, b_idx, f"identical image index {a_idx}")

    def manifests(root: Path, digest: str) -> dict[str, dict]:
        return {json.dumps(m.get("platform", {}), sort_keys=True): m for m in oci.read_json_blob(root, digest)["manifests"]}

    ma, mb = manifests(first, a_idx), manifests(second, b_idx)
    subset = set(ma) < set(mb)
    if subset:
        mb = {k: v for k, v in mb.items() if k in ma}
    for key in sorted(set(ma) | set(mb)):
        if key not in ma or key not in mb:
            return Comparison(False, a_idx, b_idx, f"platform {key} is only in the {'second' if key in mb else 'first'} layout")
        if ma[key]["digest"] == mb[key]["digest"]:
            continue
        da, db = oci.read_json_blob(first, ma[key]["digest"]), oci.read_json_blob(second, mb[key]["digest"])
        history = oci.read_json_blob(first, da["config"]["digest"]).get("history", [])
        for i, (la, lb) in enumerate(zip(da["layers"], db["layers"])):
            if la["digest"] == lb["digest"]:
                continue
            role = history[i].get("created_by", f"layer {i}").rsplit(": ", 1)[-1] if i < len(history) else f"layer {i}"
            diff = oci.first_difference(oci.blob_path(first, la["digest"]), oci.blob_path(second, lb["digest"]))
            where = f"platform {key}: {role} ({la['digest'][:19]} vs {lb['digest'][:19]})"
            return Comparison(False, a_idx, b_idx, f"{where}: first differing file {diff}" if diff
                              else f"{where}: same files, different compressed bytes (zlib?)")
        if len(da["layers"]) != len(db["layers"]):
            return Comparison(False, a_idx, b_idx, f"platform {key}: {len(da['layers'])} vs {len(db['layers'])} layers")
        ca = oci.read_json_blob(first, da["config"]["digest"])
        cb = oci.read_json_blob(second, db["config"]["digest"])
        keys = sorted(k for k in set(ca) | set(cb) if ca.get(k) != cb.get(k))
        return Comparison(False, a_idx, b_idx, f"platform {key}: layers equal, image config differs in {', '.join(keys) or 'bytes'}")
    if subset:
        same = "; ".join(f"{_platform_name(json.loads(k))} manifest {m['digest']}" for k, m in sorted(ma.items()))
        return Comparison(True, a_idx, b_idx, f"identical image manifests for the platforms built ({same}); the "
                          f"engine's index {b_idx} holds {len(manifests(second, b_idx))} platforms, this one {len(ma)}")
    return Comparison(False, a_idx, b_idx, "manifests equal, index document differs (annotations or order)")


def _platform_name(p: dict) -> str:
    return "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x)
