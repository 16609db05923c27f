"""The architecture as a test: the chain's folders import only downward (ARCHITECTURE.md).

Read from the code's own imports (module level and inside functions), so a new
upward arrow, an import circle or a private name reached across modules fails here
before a reviewer has to find it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "packager"

# Lowest first. A unit may import its own modules and any unit of a lower rank.
RANKS = {
    "core": 0,  # errors, platforms, yamlsafe, results, contract, repo, cache, manifest, ...
    "harness": 1,  # runs inside the image: core only
    "inputs": 2,
    "engine": 2,
    "image": 3,
    "run": 4,
    "bundle": 5,
    "scoreboard": 6,
    "pipeline": 7,
    "reproduce": 7,
    "doctor": 8,
    "farm": 8,
    "tune": 8,  # request-pack tune: pipeline's image, the runner, then derive (like farm, on top of pipeline)
    "explore": 9,  # a sweep: pipeline and scoreboard per point, farm's clean-up of a killed attempt
    "cli": 10,
}
FOLDERS = {"harness", "inputs", "engine", "image", "run", "bundle", "scoreboard", "farm", "cli"}
TOP_MODULES = {"pipeline", "doctor", "reproduce", "explore", "tune"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


MODULES = _modules()


def unit_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "core"  # packager/__init__.py
    if parts[1] in FOLDERS:
        return parts[1]
    if parts[1] in TOP_MODULES:
        return parts[1]
    return "core"


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports() -> dict[str, set[tuple[str, str]]]:
    """module -> {(imported packager module, name taken from it or '')}."""
    found: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "packager":
                        found[module].add((a.name, ""))
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(module, path, node)
                if target.split(".")[0] != "packager":
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    found[module].add((sub, "") if sub in MODULES else (target, a.name))
    return found


IMPORTS = imports()


def _edges() -> set[tuple[str, str]]:
    return {(m, t) for m, items in IMPORTS.items() for t, _ in items if t in MODULES and t != m}


def test_every_module_has_a_rank():
    assert {unit_of(m) for m in MODULES} <= set(RANKS)


def test_no_folder_imports_one_above_it():
    upward = sorted(f"{m} ({unit_of(m)}) imports {t} ({unit_of(t)})" for m, t in _edges()
                    if unit_of(m) != unit_of(t) and RANKS[unit_of(t)] >= RANKS[unit_of(m)])
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    graph: dict[str, set[str]] = defaultdict(set)
    for m, t in _edges():
        # a package's __init__ re-exporting its own modules is not a circle of the code
        if not t.startswith(m + "."):
            graph[m].add(t)
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(MODULES):
        if node not in state:
            visit(node)
    assert not circles, "\n".join(circles)


@pytest.mark.parametrize("unit, allowed", [
    # The image carries the harness and only what it imports: no engine, signing or web code.
    ("harness", {"core", "harness"}),
    # A verifier needs no container engine.
    ("bundle", {"core", "harness", "image", "bundle"}),
    ("image", {"core", "inputs", "engine", "image"}),
])
def test_what_a_unit_may_import(unit, allowed):
    bad = sorted(f"{m} imports {t}" for m, t in _edges() if unit_of(m) == unit and unit_of(t) not in allowed)
    assert not bad, "\n".join(bad)


def test_only_the_builder_talks_to_an_engine_in_image():
    """build.py loads into and pushes from an engine; the plan, the writer and Nix never need one."""
    users = sorted({m for m, t in _edges() if unit_of(m) == "image" and unit_of(t) == "engine"})
    assert users <= ["packager.image.build"], users


def test_bundle_takes_only_the_stdlib_writer_from_image():
    bad = sorted(f"{m} imports {t}" for m, t in _edges()
                 if unit_of(m) == "bundle" and unit_of(t) == "image" and not t.startswith("packager.image.writer"))
    assert not bad, "\n".join(bad)


def test_the_writer_is_standard_library_only():
    """writer/ also runs inside the Nix sandbox with a bare python3: it imports only itself and the stdlib."""
    import sys

    for module, path in MODULES.items():
        if not module.startswith("packager.image.writer"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top == "__future__", f"{module} imports {name}"


def test_no_private_name_used_across_modules():
    bad = sorted(f"{m} takes {name} from {t}" for m, items in IMPORTS.items() for t, name in items
                 if name.startswith("_") and not name.startswith("__") and t != m)
    assert not bad, "\n".join(bad)
