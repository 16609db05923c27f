from __future__ import annotations

import pytest

from packager.platforms import Platform


@pytest.mark.parametrize(
    "text, arch, variant, debian, uname",
    [
        ("linux/amd64", "amd64", None, "amd64", "x86_64"),
        ("linux/arm64", "arm64", "v8", "arm64", "aarch64"),
        ("linux/arm64/v8", "arm64", "v8", "arm64", "aarch64"),
        ("linux/arm/v7", "arm", "v7", "armhf", "armv7l"),
    ],
)
def test_platform_names_agree(text: str, arch: str, variant: str | None, debian: str, uname: str) -> None:
    p = Platform.parse(text)
    assert (p.os, p.architecture, p.variant, p.debian_arch, p.uname_machine) == ("linux", arch, variant, debian, uname)


def test_unknown_platform_is_value_error() -> None:
    with pytest.raises(ValueError):
        Platform.parse("linux/s390x")


def test_wheel_tags_are_arch_specific_and_newest_first() -> None:
    tags = Platform.ARM64.wheel_tags
    assert tags[0] == "manylinux_2_36_aarch64"
    assert all("aarch64" in t for t in tags)
    assert "manylinux2014_aarch64" in tags


def test_native_is_one_of_ours() -> None:
    assert Platform.native() in set(Platform)


def test_slug_is_filesystem_safe() -> None:
    assert Platform.ARMV7.slug == "linux-arm-v7"
