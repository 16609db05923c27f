"""The pure parts of doctor: parsing, per-platform emulation decisions, device globs, JSON shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from packager import doctor
from packager.doctor import Check, Report, Status
from packager.errors import BadInput, EnvironmentMissing
from packager.platforms import Platform

AARCH64_PF = """enabled
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
flags: PF
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
"""


def _binfmt(tmp_path: Path, entries: dict[str, str], mounted: bool = True) -> Path:
    d = tmp_path / "binfmt_misc"
    d.mkdir()
    if mounted:
        (d / "status").write_text("enabled\n")
        (d / "register").write_text("")
    for name, text in entries.items():
        (d / name).write_text(text)
    return d


def _flags(text: str, flags: str) -> str:
    return text.replace("flags: PF", f"flags: {flags}")


def test_parse_binfmt_entry_reads_state_interpreter_and_flags():
    entry = doctor.parse_binfmt_entry("qemu-aarch64", AARCH64_PF)
    assert entry.enabled is True
    assert entry.interpreter == "/usr/libexec/qemu-binfmt/aarch64-binfmt-P"
    assert entry.flags == "PF"
    disabled = doctor.parse_binfmt_entry("qemu-aarch64", AARCH64_PF.replace("enabled", "disabled", 1))
    assert disabled.enabled is False


@pytest.mark.parametrize("text", ["", "garbage\n", "interpreter /x\nenabled\n"])
def test_parse_binfmt_entry_rejects_malformed(text):
    with pytest.raises(ValueError):
        doctor.parse_binfmt_entry("qemu-arm", text)


def test_emulation_ok_with_fix_binary_and_native_reported(tmp_path):
    arm = AARCH64_PF.replace("aarch64", "arm")
    d = _binfmt(tmp_path, {"qemu-aarch64": AARCH64_PF, "qemu-arm": arm})
    checks = {c.name: c for c in doctor.check_emulation(d, native=Platform.AMD64)}
    assert set(checks) == {f"emulation {p.value}" for p in Platform}
    assert checks["emulation linux/amd64"].detail == "native"
    assert all(c.status is Status.OK for c in checks.values())
    assert "flags PF" in checks["emulation linux/arm64"].detail


def test_emulation_on_arm64_host_needs_x86_64_entry(tmp_path):
    arm = AARCH64_PF.replace("aarch64", "arm")
    d = _binfmt(tmp_path, {"qemu-arm": arm})
    checks = {c.name: c for c in doctor.check_emulation(d, native=Platform.ARM64)}
    assert checks["emulation linux/arm64"].detail == "native"
    assert checks["emulation linux/arm/v7"].ok
    amd = checks["emulation linux/amd64"]
    assert amd.status is Status.MISSING and "qemu-x86_64 not registered" in amd.detail


@pytest.mark.parametrize(
    "text, expect",
    [
        (_flags(AARCH64_PF, "P"), "without the F (fix-binary) flag"),
        (_flags(AARCH64_PF, ""), "flags none"),
        (AARCH64_PF.replace("enabled", "disabled", 1), "registered but disabled"),
        ("nonsense\n", "first line must be enabled/disabled"),
    ],
)
def test_emulation_missing_names_reason_and_fix(tmp_path, text, expect):
    d = _binfmt(tmp_path, {"qemu-aarch64": text, "qemu-arm": AARCH64_PF.replace("aarch64", "arm")})
    checks = {c.name: c for c in doctor.check_emulation(d, native=Platform.AMD64)}
    bad = checks["emulation linux/arm64"]
    assert bad.status is Status.MISSING
    assert expect in bad.detail
    assert bad.fix and "qemu/binfmt.sh" in bad.fix
    assert checks["emulation linux/arm/v7"].ok


def test_emulation_unmounted_binfmt_misc(tmp_path):
    d = _binfmt(tmp_path, {}, mounted=False)
    checks = doctor.check_emulation(d, native=Platform.AMD64)
    missing = [c for c in checks if not c.ok]
    assert len(missing) == 2
    assert all("not mounted" in c.detail and "qemu/binfmt.sh" in c.fix for c in missing)


def test_parse_nix_config_ignores_comments_and_keeps_empty_values():
    text = "# comment\nsandbox = true\nsubstituters =\nbuild-users-group = nixbld # trailing\nnot a setting\n"
    assert doctor.parse_nix_config(text) == {"sandbox": "true", "substituters": "", "build-users-group": "nixbld"}


def test_parse_meminfo_in_bytes():
    mem = doctor.parse_meminfo("MemTotal:       24684084 kB\nMemAvailable:   1000 kB\nHugePages_Total:       0\n")
    assert mem == {"MemTotal": 24684084 * 1024, "MemAvailable": 1024000, "HugePages_Total": 0}


def test_gpu_device_nodes_and_cdi_specs(tmp_path):
    dev, cdi = tmp_path / "dev", tmp_path / "cdi"
    dev.mkdir()
    cdi.mkdir()
    empty = {c.name: c for c in doctor.check_gpus(dev=dev, cdi_dirs=[cdi])}
    for name in ("/dev/nvidia*", "CDI specs", "/dev/dri"):
        assert empty[name].status is Status.ABSENT_OPTIONAL
        assert empty[name].fix
    (dev / "nvidia0").write_text("")
    (dev / "nvidiactl").write_text("")
    (dev / "dri").mkdir()
    (dev / "dri" / "renderD128").write_text("")
    (cdi / "nvidia.yaml").write_text("cdiVersion: 0.5.0\n")
    (cdi / "notes.txt").write_text("not a spec")
    found = {c.name: c for c in doctor.check_gpus(dev=dev, cdi_dirs=[cdi])}
    assert found["/dev/nvidia*"].ok and "nvidia0" in found["/dev/nvidia*"].detail and "nvidiactl" in found["/dev/nvidia*"].detail
    assert found["CDI specs"].ok and found["CDI specs"].detail.endswith("nvidia.yaml")
    assert found["/dev/dri"].ok and "renderD128" in found["/dev/dri"].detail


def test_fpga_nodes(tmp_path):
    dev, mgr = tmp_path / "dev", tmp_path / "fpga_manager"
    dev.mkdir()
    mgr.mkdir()
    assert not any(c.ok for c in doctor.check_fpgas(dev=dev, fpga_manager=mgr))
    (dev / "xclmgmt0").write_text("")
    (mgr / "fpga0").mkdir()
    checks = {c.name: c for c in doctor.check_fpgas(dev=dev, fpga_manager=mgr)}
    assert checks["/dev/xclmgmt*"].ok and checks["fpga_manager"].ok
    assert checks["/dev/xdevcfg"].status is Status.ABSENT_OPTIONAL


def _report() -> Report:
    return Report(
        checks=(
            Check("docker", "docker", Status.OK, "server 20.10"),
            Check("emulation linux/amd64", "emulation", Status.OK, "native"),
            Check("emulation linux/arm64", "emulation", Status.MISSING, "qemu-aarch64 not registered", "qemu/binfmt.sh"),
            Check("nvidia-smi", "gpu", Status.ABSENT_OPTIONAL, "not on PATH", "install driver"),
            Check("/dev/dri", "gpu", Status.OK, "/dev/dri/renderD128"),
            Check("/dev/xdevcfg", "fpga", Status.ABSENT_OPTIONAL, "none", "load driver"),
        ),
        host={"cores": 2},
    )


def test_capabilities_all_for_required_any_for_optional_hardware():
    report = _report()
    assert report.capabilities() == {"docker": True, "emulation": False, "gpu": True, "fpga": False}
    assert report.has("nix") is False  # never checked counts as absent


def test_json_shape_is_stable():
    doc = _report().to_json()
    assert list(doc) == ["schema_version", "host", "capabilities", "checks"]
    assert doc["schema_version"] == doctor.SCHEMA_VERSION == 1
    for check in doc["checks"]:
        assert list(check) == ["name", "capability", "status", "detail", "fix"]
        assert check["status"] in {"ok", "missing", "absent-optional"}
    text = json.dumps(doc, sort_keys=True)
    assert json.loads(text) == doc
    assert json.dumps(_report().to_json(), sort_keys=True) == text


def test_require_names_what_is_missing_and_how_to_fix():
    report = _report()
    doctor.require(report, ["docker", "gpu"])
    with pytest.raises(EnvironmentMissing) as exc:
        doctor.require(report, ["docker", "emulation", "fpga"])
    assert exc.value.return_code == 3
    message = str(exc.value)
    assert "emulation (emulation linux/arm64: qemu-aarch64 not registered)" in message
    assert "fpga (/dev/xdevcfg: none)" in message
    assert "docker (" not in message
    assert exc.value.fix == "qemu/binfmt.sh; load driver"


def test_parse_requirements():
    assert doctor.parse_requirements(" docker, emulation ,") == ("docker", "emulation")
    assert doctor.parse_requirements("") == ()
    with pytest.raises(BadInput) as exc:
        doctor.parse_requirements("docker,qemu")
    assert exc.value.return_code == 2 and "qemu" in str(exc.value) and "--require" in str(exc.value)


def test_render_table_lists_every_check_and_each_fix_once():
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(doctor.render_table(_report()))
    text = console.export_text()
    for check in _report().checks:
        assert check.detail in text
    assert text.count("qemu/binfmt.sh") == 1
    assert "gpu: nvidia-smi" in text


@pytest.mark.parametrize("text, version", [
    ("qemu-aarch64 version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright (c) 2003-2025\n", (10, 0, 2)),
    ("qemu-arm version 7.2.0 (Debian 1:7.2+dfsg-7+deb12u18)\n", (7, 2, 0)),
    ("", None),
    ("qemu: /usr/libexec/qemu-binfmt/aarch64-binfmt-P has to be run using kernel binfmt-misc subsystem\n", None),
])
def test_parse_qemu_version(text, version):
    assert doctor.parse_qemu_version(text) == version
    if version is not None:
        assert (version >= doctor.QEMU_MIN_VERSION) == (version[0] >= 8)
