"""Parsing what apt and pip print: the texts below were captured from apt 2.6 and pip 23.2 on bookworm."""

from __future__ import annotations

import pytest
from packaging.requirements import Requirement

from packager.errors import EnvironmentMissing, UnsupportedPlatformError
from packager.inputs.debian import (
    AptSource,
    name_version,
    parse_print_uris,
    parse_stanzas,
    sources_for,
)
from packager.inputs.wheels import _check_transitive_markers, _explain_failure, pip_env
from packager.platforms import Platform, base_system

BOOKWORM = base_system("bookworm")

PRINT_URIS = """\
'http://deb.debian.org/debian/pool/main/b/base-files/base-files_12.4%2bdeb12u15_amd64.deb' base-files_12.4+deb12u15_amd64.deb 70936 MD5Sum:0d863c1ee183c8e006bd085d63f4874f
'http://deb.debian.org/debian/pool/main/libc/libcap2/libcap2_2.66-4%2bdeb12u3%2bb1_amd64.deb' libcap2_1%3a2.66-4+deb12u3+b1_amd64.deb 27708 MD5Sum:f3075bfe2ad69652ced08bf6c85b461a
'http://deb.debian.org/debian-security/pool/updates/main/a/apt/apt_2.6.2_amd64.deb' apt_2.6.2_amd64.deb 1373116 
"""


def test_print_uris_including_security_lines_without_a_hash() -> None:
    uris = parse_print_uris(PRINT_URIS, "amd64")
    assert len(uris) == 3
    assert uris["apt_2.6.2_amd64.deb"] == ("http://deb.debian.org/debian-security/pool/updates/main/a/apt/apt_2.6.2_amd64.deb", 1373116)
    assert name_version("libcap2_1%3a2.66-4+deb12u3+b1_amd64.deb") == ("libcap2", "1:2.66-4+deb12u3+b1")


def test_an_unparseable_line_is_an_error_not_a_dropped_package() -> None:
    with pytest.raises(EnvironmentMissing, match="cannot parse"):
        parse_print_uris(PRINT_URIS + "'http://x/y.deb' y.deb notasize\n", "amd64")
    with pytest.raises(EnvironmentMissing, match="no packages"):
        parse_print_uris("Reading package lists...\n", "amd64")


def test_security_suite_sits_beside_the_debian_archive() -> None:
    assert sources_for("http://deb.debian.org/debian/", "bookworm") == (
        AptSource("http://deb.debian.org/debian", "bookworm"),
        AptSource("http://deb.debian.org/debian", "bookworm-updates"),
        AptSource("http://deb.debian.org/debian-security", "bookworm-security"),
    )
    assert [s.suite for s in sources_for("file:///srv/mirror", "bookworm")] == ["bookworm", "bookworm-updates"]


def test_preflight_message_for_a_top_level_requirement() -> None:
    out = ("ERROR: Could not find a version that satisfies the requirement onnxruntime==1.20.1 (from versions: none)\n"
           "ERROR: No matching distribution found for onnxruntime==1.20.1\n")
    err = _explain_failure(out, Platform.ARMV7, [Requirement("onnxruntime==1.20.1")])
    assert isinstance(err, UnsupportedPlatformError) and err.return_code == 2
    assert str(err).startswith('python.requirements: onnxruntime==1.20.1 has no wheel for linux/arm/v7: '
                               'use framework "reference" on that platform or drop it')


def test_preflight_message_names_the_requirement_that_pulled_a_missing_dependency() -> None:
    out = ("ERROR: Could not find a version that satisfies the requirement numpy (from onnxconverter-common) (from versions: none)\n"
           "ERROR: No matching distribution found for numpy\n")
    err = _explain_failure(out, Platform.ARMV7, [Requirement("onnxconverter-common==1.14.0")])
    assert "numpy (needed by onnxconverter-common) has no wheel for linux/arm/v7" in str(err)


def _report(requires: list[str], installed: list[str]) -> dict:
    host = {"platform_machine": "x86_64", "sys_platform": "linux", "platform_system": "Linux", "python_version": "3.11",
            "python_full_version": "3.11.7", "implementation_name": "cpython", "os_name": "posix",
            "platform_python_implementation": "CPython", "platform_release": "", "platform_version": "",
            "implementation_version": "3.11.7"}
    items = [{"metadata": {"name": "top", "version": "1", "requires_dist": requires}}]
    items += [{"metadata": {"name": n, "version": "1"}} for n in installed]
    return {"environment": host, "install": items}


def test_a_dependency_pip_skipped_by_judging_markers_on_the_host_is_reported() -> None:
    report = _report(['armhelper>=1; platform_machine == "aarch64"'], [])
    with pytest.raises(UnsupportedPlatformError, match="armhelper"):
        _check_transitive_markers(report, Platform.ARM64, BOOKWORM)
    _check_transitive_markers(report, Platform.AMD64, BOOKWORM)  # not needed on amd64
    _check_transitive_markers(_report(['armhelper>=1; platform_machine == "aarch64"'], ["armhelper"]), Platform.ARM64, BOOKWORM)
    _check_transitive_markers(_report(['extra-thing; extra == "gpu"'], []), Platform.ARM64, BOOKWORM)


def test_pip_runs_without_host_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from packager.cache import Cache

    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    monkeypatch.setenv("PIP_CONSTRAINT", "/etc/xdg/pip/constraints.txt")
    env = pip_env(Cache.open(tmp_path))
    assert env["PIP_CONFIG_FILE"] == "/dev/null"
    assert "PIP_FIND_LINKS" not in env and "PIP_CONSTRAINT" not in env


APT_CACHE_SHOW = """\
Package: python3-numpy
Source: numpy (1:1.24.2-1+deb12u1)
Version: 1:1.24.2-1+deb12u1
Architecture: arm64
Depends: python3 (<< 3.12), python3 (>= 3.11~), libc6 (>= 2.34)
Description: Fast array facility to the Python 3 language
 Numpy contains a powerful N-dimensional array object, sophisticated
 (broadcasting) functions, tools for integrating C/C++ and Fortran code.
 .
 Size: a continuation line that looks like a field is not one.
Filename: pool/main/n/numpy/python3-numpy_1.24.2-1+deb12u1_arm64.deb
Size: 3852044
SHA256: 7bd7d0f5b8d5b4e54d0f0c3eed3f0eb78ad8c1f4ff54ffa7a3bd1e1e1b8e2c31

Package: libc6
Version: 2.36-9+deb12u10
Architecture: arm64
Filename: pool/main/g/glibc/libc6_2.36-9+deb12u10_arm64.deb
Size: 2321044
SHA256: 0c4f0fdd6c7ad4c1e7fdc8a5d5b4c29cc4b1e7f0d7a0d3e6bd2b4f0f0a6b7c11

Package: libc6
Version: 2.36-9+deb12u10
Architecture: arm64
Size: 1
"""


def test_apt_cache_show_stanzas_by_package_and_version() -> None:
    stanzas = parse_stanzas(APT_CACHE_SHOW)
    assert sorted(stanzas) == [("libc6", "2.36-9+deb12u10"), ("python3-numpy", "1:1.24.2-1+deb12u1")]
    numpy = stanzas[("python3-numpy", "1:1.24.2-1+deb12u1")]
    # the continuation line stays inside Description: Size is the field's own value
    assert numpy["Size"] == "3852044" and numpy["Filename"].endswith("_arm64.deb")
    assert numpy["SHA256"].startswith("7bd7d0f5")
    assert stanzas[("libc6", "2.36-9+deb12u10")]["Size"] == "2321044"  # the first of a repeated pair wins
