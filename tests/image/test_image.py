"""What is inside each platform's image, checked from a running container (pytest-testinfra)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.emulation, pytest.mark.network, pytest.mark.slow]

MODEL = "/opt/request/model.onnx"


def test_reports_its_own_machine(container):
    platform, host, _ = container
    assert host.check_output("uname -m") == platform.uname_machine


def test_runs_as_the_non_root_runner(container):
    _, host, _ = container
    assert host.check_output("id -u") == "1000"
    assert host.user().name == "runner"
    assert host.file("/home/runner").user == "runner"


def test_model_is_present_with_its_locked_hash(container):
    _, host, lock = container
    f = host.file(MODEL)
    assert f.is_file and f.user == "root" and f.mode == 0o644
    assert f.sha256sum == lock["model"]["sha256"]


def test_locked_wheels_are_installed(container):
    platform, host, lock = container
    for wheel in lock["platforms"][platform.value]["wheels"]:
        assert host.run(f"python3 -c 'import importlib.metadata as m; print(m.version(\"{wheel['name']}\"))'").stdout.strip() \
            == wheel["version"]


def test_locked_debian_packages_are_installed(container):
    platform, host, lock = container
    installed = host.check_output("dpkg-query -W -f='${Package}=${Version}\\n'").splitlines()
    assert sorted(installed) == sorted(f"{d['name']}={d['version']}" for d in lock["platforms"][platform.value]["debian"]["packages"])


def test_entry_point_works(container):
    _, host, _ = container
    res = host.run("python3 -m packager.harness --help")
    assert res.rc == 0, res.stderr
    assert "--model" in res.stdout


def test_no_package_caches_or_build_tools_left(container):
    _, host, _ = container
    assert host.check_output("find /var/cache/apt /var/lib/apt/lists -type f | wc -l") == "0"
    assert host.check_output("find / -xdev -name __pycache__ | wc -l") == "0"
    assert host.check_output("find /var/log -type f | wc -l") == "0"
    for tool in ("gcc", "cc", "make", "pip", "pip3", "git"):
        assert not host.exists(tool), f"{tool} is in the image"
    assert not host.file("/etc/machine-id").exists
