"""Every hostile configuration file of ``_hostile_configs.py`` is refused in one line, exit 2, naming the file.

Tuning databases (``harness.tuningdb.read_database``), design-space files (``explore.load_space``),
run-config files (what ``--run-config`` reads) and components (a manifest's ``use:``, through
``load_manifest``): depth and alias bombs, huge scalars, sparse files, values PyYAML's constructors
choke on, wrong types, links and special files. No traceback, no hang, nothing written; all in-process.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
from _hostile_configs import CASES, KINDS, Case

from packager.cli.explore import run_config_from
from packager.errors import BadInput, RequestPackError
from packager.explore import load_space
from packager.harness.tuningdb import read_database
from packager.manifest import load_manifest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkout of our own (the real components/ and one example artifact); each case adds a component."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(REPO / "components", root / "components")
    shutil.copytree(REPO / "artifacts" / "efficientnet-lite0", root / "artifacts" / "efficientnet-lite0",
                    ignore=shutil.ignore_patterns("image.json", "README.md"))
    return root


def _component(repo: Path, case: Case) -> tuple[Path, Path]:
    """The component file to attack and a manifest that uses it (the example's, with its dataset: replaced)."""
    import yaml

    name = case.name.lower()
    manifest = yaml.safe_load((repo / "artifacts/efficientnet-lite0/request.yaml").read_text())
    manifest.update(name=name, dataset={"use": name})
    art = repo / "artifacts" / name
    art.mkdir()
    (art / "request.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return repo / "components" / "datasets" / f"{name}.yaml", art


def test_the_generator_covers_every_reader() -> None:
    kinds = Counter(c.kind for c in CASES)
    assert set(kinds) == set(KINDS) and min(kinds.values()) >= 25, kinds
    assert len({c.name for c in CASES}) == len(CASES) >= 150


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_refused_in_one_line(case: Case, repo: Path, tmp_path: Path) -> None:
    (tmp_path / "canary.txt").write_text("canary\n")
    if case.kind == "component":
        target, art = _component(repo, case)
    else:
        (tmp_path / "in").mkdir()
        target = tmp_path / "in" / {"space": "space.yaml", "run-config": "run.yaml", "tuning-db": "tuning-database.json"}[case.kind]
    case.make(target)
    read = {"space": lambda: load_space(target), "run-config": lambda: run_config_from([], target),
            "tuning-db": lambda: read_database(target), "component": lambda: load_manifest(art)}[case.kind]
    with pytest.raises(Exception) as e:
        read()
    err = e.value
    assert isinstance(err, RequestPackError), f"{case.name}: {type(err).__name__} would be a traceback: {str(err)[:300]}"
    text = str(err)
    assert isinstance(err, BadInput) and err.return_code == 2, f"{case.name}: exit {err.return_code}: {text[:300]}"
    assert case.message in text, f"{case.name}: {text[:400]!r} lacks {case.message!r}"
    assert "\n" not in text and "\r" not in text and len(text) < 2000, f"{case.name}: not one short line: {text[:300]!r}"
    assert target.name in text, f"{case.name}: the file is not named: {text[:300]!r}"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["canary.txt"] + (["in"] if case.kind != "component" else []))
    assert (tmp_path / "canary.txt").read_text() == "canary\n"
    assert not Path("/tmp/request-pack-hostile-evil").exists()
