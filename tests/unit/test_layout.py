"""The test tree itself: pytest's default import mode needs every test module's basename to be unique."""

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_basenames_are_unique():
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert not [n for n, c in names.items() if c > 1], "rename one of each pair: pytest cannot import both"


# --- the chain's directions, for the folders whose rules are settled ------------------------

import ast  # noqa: E402
import sys  # noqa: E402

PACKAGE = TESTS.parent / "packager"
CORE = ("packager", "packager.errors", "packager.platforms", "packager.manifest", "packager.yamlsafe",
        "packager.cache", "packager.results", "packager.contract", "packager.repo", "packager.attestation")


def _imports(path: Path) -> list[str]:
    """Every module an import statement of ``path`` names, wherever it stands (lazy imports count)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append("." * node.level + (node.module or ""))
    return out


def _outside(folder: str, allowed: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {}
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        names = [m for m in _imports(path) if m.startswith("packager") and m not in CORE
                 and not any(m == a or m.startswith(a + ".") for a in allowed)]
        if names:
            bad[path.relative_to(PACKAGE).as_posix()] = names
    return bad


def test_image_imports_only_core_inputs_and_itself():
    # build.py loads into and pushes from an engine; that is the one way up.
    bad = _outside("image", ("packager.image", "packager.inputs", "packager.engine"))
    assert not bad, bad
    engine_users = {p.relative_to(PACKAGE).as_posix() for p in (PACKAGE / "image").rglob("*.py")
                    if any(m.startswith("packager.engine") for m in _imports(p))}
    assert engine_users <= {"image/build.py"}, engine_users


def test_bundle_imports_no_engine_and_nothing_above_it():
    bad = _outside("bundle", ("packager.bundle", "packager.harness", "packager.image.writer"))
    assert not bad, bad


def test_the_image_writer_needs_only_the_standard_library():
    # It is copied into the Nix sandbox, where only Debian's bare python3 runs it.
    for path in sorted((PACKAGE / "image" / "writer").glob("*.py")):
        third_party = [m for m in _imports(path) if not m.startswith(".") and m.split(".")[0] not in sys.stdlib_module_names]
        assert not third_party, (path.name, third_party)
