"""Composition (docs/components.md): merge rules, errors naming both files and the field, frameworks
per platform, parent: chains, stale locks, derive, and golden resolved manifests of the examples."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from packager import compose
from packager.errors import BadInput, ManifestError
from packager.inputs.lock import freshness
from packager.manifest import load_composed, load_manifest, resolved_yaml
from packager.platforms import Platform
from packager.runconfig import RunConfig

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parents[1] / "data" / "resolved"
EXAMPLES = ("efficientnet-lite0", "efficientnet-lite0-ort-int8", "resnet-tvm")
_SCRIPT = Path(sys.executable).parent / "request-pack"
BASE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "packager.cli"]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A checkout of our own: the real components/ and the example artifacts (manifests and locks)."""
    shutil.copytree(REPO / "components", tmp_path / "components")
    for name in ("efficientnet-lite0", "efficientnet-lite0-ort-int8", "resnet-tvm"):
        shutil.copytree(REPO / "artifacts" / name, tmp_path / "artifacts" / name,
                        ignore=shutil.ignore_patterns("image.json", "README.md"))
    return tmp_path


def write(path: Path, data: dict | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def manifest(repo: Path, name: str = "x", **sections: object) -> Path:
    base = yaml.safe_load((repo / "artifacts/efficientnet-lite0/request.yaml").read_text())
    base.update(name=name, **sections)
    return write(repo / "artifacts" / name / "request.yaml", base)


def error(path: Path) -> str:
    with pytest.raises(BadInput) as e:
        load_manifest(path)
    return str(e.value)


# --- golden resolved manifests -------------------------------------------------------------------


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_resolve_to_their_golden_manifest(name: str) -> None:
    # To accept a deliberate change: request-pack show artifacts/NAME > tests/data/resolved/NAME.yaml
    assert resolved_yaml(load_manifest(REPO / "artifacts" / name)) == (GOLDEN / f"{name}.yaml").read_text()


def test_resolved_yaml_stands_alone_and_keeps_the_digest(repo: Path) -> None:
    m = load_manifest(repo / "artifacts/efficientnet-lite0")
    alone = write(repo / "elsewhere" / "request.yaml", resolved_yaml(m))
    again, resolved = load_composed(alone)
    assert not resolved.composed and again.digest() == m.digest()


# --- merge rules ---------------------------------------------------------------------------------


def test_mappings_merge_and_lists_replace(repo: Path) -> None:
    m = load_manifest(manifest(repo, framework={"use": "onnxruntime-1.32", "options": {"threads": 2}},
                               preprocessing={"use": "inception-224", "mean": [0.5, 0.5, 0.5], "color": "BGR"}))
    assert m.framework.options.threads == 2
    assert m.framework.options.execution_providers == ["CPUExecutionProvider"]  # kept from the component
    assert m.preprocessing.mean == [0.5, 0.5, 0.5] and m.preprocessing.resize == 256 and m.preprocessing.color == "BGR"


def test_unknown_override_key_names_both_files_and_the_field(repo: Path) -> None:
    text = error(manifest(repo, model={"use": "efficientnet-lite0", "sha265": "0" * 64}))
    assert "artifacts/x/request.yaml" in text and "components/models/efficientnet-lite0.yaml" in text
    assert "model.sha265" in text and "did you mean 'sha256'" in text


def test_type_change_names_both_files_and_the_field(repo: Path) -> None:
    text = error(manifest(repo, preprocessing={"use": "inception-224", "mean": 0.5}))
    assert "artifacts/x/request.yaml" in text and "components/preprocessing/inception-224.yaml" in text
    assert "preprocessing.mean" in text and "type change" in text


def test_schema_error_names_the_component_that_set_the_field(repo: Path) -> None:
    write(repo / "components/preprocessing/broken.yaml",
          {"kind": "preprocessing", "preprocessing": {"resize": 200, "crop": 224, "mean": [0, 0, 0], "std": [1, 1, 1]}})
    text = error(manifest(repo, preprocessing={"use": "broken"}))
    assert text.startswith("components/preprocessing/broken.yaml") and "crop 224 is larger than resize 200" in text


def test_precision_selects_the_variant_with_its_recipe(repo: Path) -> None:
    m = load_manifest(manifest(repo, model={"use": "efficientnet-lite0", "precision": "int8"}))
    assert m.model.precision == "int8" and m.model.sha256.startswith("fb3b468d")
    assert m.model.conversion.recipe == "onnxruntime-quantize-static"
    assert m.model.conversion.args["fp32_sha256"].startswith("e1659a08") and "calibration" in m.model.conversion.args
    assert m.expectations.published_top1 == 0.751  # the model component's expectations
    text = error(manifest(repo, model={"use": "efficientnet-lite0", "precision": "fp16"}))
    assert "no 'fp16' variant (known: fp32, int8)" in text and "model.precision" in text


def test_frameworks_per_platform(repo: Path) -> None:
    m = load_manifest(repo / "artifacts/efficientnet-lite0")
    amd64, armv7 = Platform.parse("linux/amd64"), Platform.parse("linux/arm/v7")
    assert m.framework_for(amd64).name == "onnxruntime" and m.framework_for(armv7).name == "reference"
    assert "onnxruntime" in {r.name for r in m.requirements_for(amd64)}
    assert "onnxruntime" not in {r.name for r in m.requirements_for(armv7)}
    assert "pydantic" in {r.name for r in m.requirements_for(armv7)}
    assert "python3-numpy" in m.packages_for(armv7) and "python3-numpy" not in m.packages_for(amd64)
    view = m.for_platform(armv7)  # what the runner hands the harness
    assert view.framework.name == "reference" and view.framework.options.threads == 1 and not view.frameworks
    text = error(manifest(repo, frameworks={"linux/riscv64": {"use": "reference-debian"}}))
    assert "frameworks" in text


def test_run_settings_per_platform(repo: Path) -> None:
    m = load_manifest(repo / "artifacts/efficientnet-lite0")
    armv7, amd64 = Platform.parse("linux/arm/v7"), Platform.parse("linux/amd64")
    # the arm/v7 entry replaces two fields of run: and keeps the rest (stages, scenarios)
    assert (m.run_for(armv7).batch_sizes, m.run_for(armv7).warmup) == ([1, 4], 2)
    assert m.run_for(armv7).stages == m.run.stages and m.run_for(amd64) == m.run and m.run.batch_sizes == [1, 32]
    view = m.for_platform(armv7)  # the run-config.json and request.json of arm/v7
    assert view.run.batch_sizes == [1, 4] and not view.runs and "runs" not in view.model_dump()
    # a change to the shared run: reaches the platform's entry, unless the entry sets the field
    d = load_manifest(write(repo / "artifacts/d/request.yaml",
                            {"parent": "../efficientnet-lite0", "name": "d", "run": {"warmup": 5, "min_duration_s": 1}}))
    assert (d.run_for(armv7).warmup, d.run_for(armv7).min_duration_s, d.run_for(amd64).warmup) == (2, 1, 5)
    # a derivation that drops the platform drops its entry; runs: null drops them all
    int8 = load_manifest(repo / "artifacts/efficientnet-lite0-ort-int8")
    assert not int8.runs and int8.run.batch_sizes == [1, 32]
    e = load_manifest(write(repo / "artifacts/e/request.yaml", {"parent": "../efficientnet-lite0", "name": "e", "runs": None}))
    assert not e.runs


def test_derive_refuses_a_run_setting_a_platforms_own_entry_would_replace(repo: Path) -> None:
    """efficientnet-lite0's arm/v7 has its own batch sizes: --set run.batch_sizes would not reach it, and its results
    would silently run with other batches than asked. Refused before anything is locked or left behind."""
    from packager.inputs.derive import derive

    parent = repo / "artifacts/efficientnet-lite0"
    with pytest.raises(BadInput) as e:
        derive(parent, ["platforms=[linux/arm/v7]", "run.batch_sizes=[1]"], "armv7-batch1")
    assert "--set run.batch_sizes does not reach linux/arm/v7" in str(e.value) and "runs.linux/arm/v7.batch_sizes" in str(e.value)
    assert not (repo / "artifacts/armv7-batch1").exists()
    # what the message says to do resolves to batch 1 on arm/v7, and a field its entry does not set reaches it
    text = compose.derived_manifest(parent, ["platforms=[linux/arm/v7]", "runs.linux/arm/v7.batch_sizes=[1]",
                                             "run.stages.functional.samples=2"], "armv7-batch1")
    m = load_manifest(write(repo / "artifacts/armv7-batch1/request.yaml", text))
    run = m.run_for(Platform.parse("linux/arm/v7"))
    assert (run.batch_sizes, run.stages.functional.samples) == ([1], 2)


def test_run_knobs_per_platform_are_checked_against_its_framework(repo: Path) -> None:
    armv7, amd64 = Platform.parse("linux/arm/v7"), Platform.parse("linux/amd64")
    m = load_manifest(manifest(repo, run={"knobs": {"threads": 2}}, runs={"linux/arm/v7": {"knobs": {"threads": None}}}))
    # the platform's knobs under the asked ones: what the harness gets and the bundle signs
    assert m.run_config_for(amd64).as_dict() == {"threads": 2} and m.run_config_for(armv7).as_dict() == {}
    assert m.run_config_for(amd64, RunConfig(threads=1, batch=4)).as_dict() == {"threads": 1, "batch": 4}
    assert m.for_platform(amd64).run.knobs == {"threads": 2}
    # threads on arm/v7's reference executor (numpy picks its own threads) would mislabel its results
    for bad in (manifest(repo, run={"knobs": {"threads": 2}}, runs=None),
                manifest(repo, runs={"linux/arm/v7": {"knobs": {"threads": 2}}})):
        with pytest.raises(ManifestError) as info:
            load_manifest(bad)
        text = str(info.value)
        assert "linux/arm/v7" in text and "'threads'" in text and "'reference'" in text and info.value.return_code == 2
    assert "unknown knob 'thread' (did you mean 'threads'?)" in error(manifest(repo, run={"knobs": {"thread": 2}}))
    assert "runs.linux/arm/v7.knobz: unknown key 'knobz'" in error(manifest(repo, runs={"linux/arm/v7": {"knobz": 1}}))
    assert "runs: 'linux/s390x' is not one of platforms" in error(manifest(repo, runs={"linux/s390x": {"warmup": 1}}))


def test_a_tuning_log_of_a_platforms_framework_stays_inside_the_artifact(repo: Path) -> None:
    entry = {"linux/arm/v7": {"use": "reference-debian", "options": {"tuning_log": "../../etc/passwd"}}}
    text = error(manifest(repo, frameworks=entry))
    assert "frameworks.linux/arm/v7.options.tuning_log" in text and "escapes the artifact directory" in text


def test_runs_alone_is_resolved_and_stays_its_own_resolution(repo: Path) -> None:
    resolved = yaml.safe_load(resolved_yaml(load_manifest(repo / "artifacts/efficientnet-lite0")))
    resolved["runs"] = {"linux/arm/v7": {"warmup": 3}}  # a hand-written manifest with no use: at all
    m, how = load_composed(write(repo / "artifacts/plain/request.yaml", resolved))
    assert not how.composed and m.run_for(Platform.parse("linux/arm/v7")).batch_sizes == [1, 32]
    assert m.run_for(Platform.parse("linux/arm/v7")).warmup == 3


def test_two_pins_of_one_project_name_both_files(repo: Path) -> None:
    text = error(manifest(repo, python={"requirements": ["numpy==2.3.0"]}))
    assert "numpy==2.3.0" in text and "numpy==2.4.6" in text and "components/frameworks/onnxruntime-1.32.yaml" in text


# --- component files are hostile input too ------------------------------------------------------------


@pytest.mark.parametrize("name", ["../models/efficientnet-lite0", "/etc/passwd", "a/b", "", 3])
def test_use_is_a_name_not_a_path(repo: Path, name: object) -> None:
    assert "is not a component name" in error(manifest(repo, dataset={"use": name}))


def test_symlink_out_of_the_components_folder_is_refused(repo: Path) -> None:
    outside = write(repo / "outside.yaml", {"kind": "dataset", "dataset": {"layout": "labels-tsv"}})
    (repo / "components/datasets/evil.yaml").symlink_to(outside)
    assert "refused" in error(manifest(repo, dataset={"use": "evil"}))


def test_component_kind_and_keys_are_checked(repo: Path) -> None:
    write(repo / "components/datasets/wrong.yaml", {"kind": "model", "dataset": {"layout": "labels-tsv"}})
    assert "kind is 'model'" in error(manifest(repo, dataset={"use": "wrong"}))
    write(repo / "components/datasets/extra.yaml", {"kind": "dataset", "dataset": {"layout": "labels-tsv"}, "python": {}})
    assert "unknown key 'python' in a dataset component" in error(manifest(repo, dataset={"use": "extra"}))
    assert "no dataset component 'nope'" in error(manifest(repo, dataset={"use": "nope"}))


def test_component_file_bounds(repo: Path) -> None:
    write(repo / "components/datasets/huge.yaml", "kind: dataset\n" + "#" * (2 << 20))
    assert "huge.yaml" in error(manifest(repo, dataset={"use": "huge"}))
    write(repo / "components/datasets/alias.yaml", "kind: dataset\ndataset: &a {layout: labels-tsv}\nx: *a\n")
    assert "aliases are not allowed" in error(manifest(repo, dataset={"use": "alias"}))


# --- parent: -------------------------------------------------------------------------------------


def test_parent_chain_and_use_starts_afresh(repo: Path) -> None:
    parent = manifest(repo, "p", model={"use": "efficientnet-lite0", "precision": "int8"},
                      platforms=["linux/amd64", "linux/arm64"], frameworks=None, runs=None)
    child = write(repo / "artifacts/c/request.yaml",
                  {"parent": "../p", "name": "c", "model": {"use": "resnet18-seeded"}, "framework": {"use": "tvm-0.27"}})
    (repo / "artifacts/c/weights-seed.json").write_text("{}")
    m = load_manifest(child)
    assert m.name == "c" and m.model.precision == "fp32" and m.framework.name == "tvm"  # the parent's int8 is gone
    assert m.platforms == load_manifest(parent).platforms
    files = load_composed(child)[1].files
    assert "artifacts/p/request.yaml" in files and "components/frameworks/tvm-0.27.yaml" in files


@pytest.mark.parametrize("parent", ["..", "../../x", "/abs", "../c", "p"])
def test_parent_must_be_a_sibling(repo: Path, parent: str) -> None:
    path = write(repo / "artifacts/c/request.yaml", {"parent": parent, "name": "c"})
    assert "parent" in error(path)


def test_parent_cycle_stops(repo: Path) -> None:
    write(repo / "artifacts/a/request.yaml", {"parent": "../b", "name": "a"})
    write(repo / "artifacts/b/request.yaml", {"parent": "../a", "name": "b"})
    assert "parent: levels" in error(repo / "artifacts/a")


# --- the lock ------------------------------------------------------------------------------------


def test_lock_check_names_the_changed_component(repo: Path) -> None:
    assert freshness(repo / "artifacts/efficientnet-lite0").stale == ()
    component = repo / "components/frameworks/reference-debian.yaml"
    component.write_text(component.read_text() + "# a comment changes the file's sha256\n")
    why = freshness(repo / "artifacts/efficientnet-lite0").stale
    assert len(why) == 1 and "components/frameworks/reference-debian.yaml changed" in why[0]
    assert freshness(repo / "artifacts/efficientnet-lite0-ort-int8").stale == ()  # does not use it
    cli = subprocess.run([*BASE, "lock", "--check", "artifacts/efficientnet-lite0", "artifacts/resnet-tvm"], cwd=repo,
                         capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert cli.returncode == 1 and "stale" in cli.stdout and "fresh artifacts/resnet-tvm" in cli.stdout
    # a comment changes no field: --stale re-records the component, resolves nothing (no network)
    relock = subprocess.run([*BASE, "lock", "--stale"], cwd=repo, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "COLUMNS": "200"})
    assert relock.returncode == 0, relock.stderr
    assert all(freshness(a).stale == () for a in (repo / "artifacts").iterdir())


def test_show_prints_resolved_yaml_and_bad_input_exits_2(repo: Path) -> None:
    ok = subprocess.run([*BASE, "show", "artifacts/efficientnet-lite0-ort-int8"], cwd=repo, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and yaml.safe_load(ok.stdout)["model"]["precision"] == "int8"
    manifest(repo, dataset={"use": "nope"})
    bad = subprocess.run([*BASE, "show", "artifacts/x"], cwd=repo, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "COLUMNS": "300"})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "no dataset component 'nope'" in bad.stderr
    # one platform's view: what its image's request.json holds
    view = subprocess.run([*BASE, "show", "artifacts/efficientnet-lite0", "--platform", "linux/arm/v7"], cwd=repo,
                          capture_output=True, text=True, timeout=60)
    shown = yaml.safe_load(view.stdout)
    assert view.returncode == 0 and shown["run"]["batch_sizes"] == [1, 4] and shown["framework"]["name"] == "reference"
    assert "runs" not in shown and "frameworks" not in shown
    other = subprocess.run([*BASE, "show", "artifacts/efficientnet-lite0-ort-int8", "--platform", "linux/arm/v7"], cwd=repo,
                           capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "300"})
    assert other.returncode == 2 and "linux/arm/v7 is not one of its platforms" in other.stderr


# --- derive --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sets", "check"), [
    (["framework.use=tvm-0.27"], lambda m: m.framework.name == "tvm" and m.frameworks["linux/arm/v7"].name == "reference"),
    (["model.precision=int8", "platforms=[linux/amd64, linux/arm64]"],
     lambda m: m.model.precision == "int8" and not m.frameworks),
    (["dataset.use=ilsvrc2012-val"], lambda m: m.dataset.layout == "ilsvrc2012-val" and m.model.precision == "fp32"),
    (["framework.options.threads=2"], lambda m: m.framework.options.threads == 2),
])
def test_derived_manifest_is_parent_plus_overrides(repo: Path, sets: list[str], check) -> None:
    text = compose.derived_manifest(repo / "artifacts/efficientnet-lite0", sets, "d")
    m = load_manifest(write(repo / "artifacts/d/request.yaml", text))
    assert check(m) and m.name == "d" and "efficientnet-lite0 with " in m.description
    assert len(text.splitlines()) < 12  # a variant is a few lines


@pytest.mark.parametrize(("sets", "says"), [([], "at least one --set"), (["name=y"], "cannot be set"),
                                            (["noequals"], "not KEY=VALUE"), (["model.precision=[1"], "not a YAML value")])
def test_derive_refuses_bad_sets(repo: Path, sets: list[str], says: str) -> None:
    with pytest.raises(ManifestError, match=says):
        compose.derived_manifest(repo / "artifacts/efficientnet-lite0", sets, "d")


def test_derive_locks_by_reusing_the_parent_lock(repo: Path) -> None:
    from packager.inputs.derive import derive

    parent_lock = yaml.safe_load((repo / "artifacts/efficientnet-lite0/request.lock").read_text())
    # platform entries and the model are lent by the parent's lock: nothing is resolved again
    result = derive(repo / "artifacts/efficientnet-lite0", ["run.warmup=2", "platforms=[linux/amd64, linux/arm/v7]"], "d")
    lock = yaml.safe_load(result.path.read_text())
    assert lock["platforms"] == {k: parent_lock["platforms"][k] for k in ("linux/amd64", "linux/arm/v7")}
    assert lock["model"] == parent_lock["model"] and "artifacts/efficientnet-lite0/request.yaml" in lock["components"]
    assert freshness(repo / "artifacts/d").stale == ()
    with pytest.raises(BadInput, match="already exists"):
        derive(repo / "artifacts/efficientnet-lite0", ["run.warmup=3"], "d")
    with pytest.raises(ManifestError):
        derive(repo / "artifacts/efficientnet-lite0", ["model.precision=fp16"], "e")
    assert not (repo / "artifacts/e").exists()  # a failed derivation leaves nothing behind


def test_a_model_brings_its_preprocessing_and_the_crop_must_fit(repo: Path) -> None:
    m = load_manifest(manifest(repo, model={"use": "efficientnet-lite1"}))  # no preprocessing section: lite1's own
    assert m.model.input.shape[2:] == [240, 240] and m.preprocessing.crop == 240 and m.preprocessing.resize >= 240
    m = load_manifest(manifest(repo, model={"use": "efficientnet-lite1"}, preprocessing={"interpolation": "bicubic"}))
    assert m.preprocessing.crop == 240 and m.preprocessing.interpolation == "bicubic"  # fields merge over the model's
    text = error(manifest(repo, model={"use": "efficientnet-lite1"}, preprocessing={"use": "inception-224"}))
    assert "takes 240x240 images, preprocessing.crop is 224" in text


def test_a_platform_view_of_a_single_framework_manifest_is_the_manifest(repo: Path) -> None:
    # the image's request.json is this view: for a manifest without frameworks per platform it must not
    # change a byte (published digests of such artifacts stay valid)
    m = load_manifest(repo / "artifacts/resnet-tvm")
    for p in m.platforms:
        assert m.for_platform(p).model_dump(mode="json") == m.model_dump(mode="json")


def test_derive_copies_the_parents_local_model_source(repo: Path) -> None:
    text = compose.derived_manifest(repo / "artifacts/resnet-tvm", ["framework.options.opt_level=2"], "r2")
    assert "weights-seed.json" not in text
    from packager.inputs.derive import derive

    result = derive(repo / "artifacts/resnet-tvm", ["framework.options.opt_level=2"], "r2")
    child = result.path.parent
    assert (child / "weights-seed.json").read_bytes() == (repo / "artifacts/resnet-tvm/weights-seed.json").read_bytes()
    assert load_manifest(child).framework.options.opt_level == 2 and freshness(child).stale == ()
