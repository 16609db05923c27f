"""The content-addressed cache: verified on entry, re-verified on read, never half-written."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from packager.cache import Cache, default_root
from packager.errors import CacheMissError, IntegrityError, NetworkUnavailable

DATA = b"request-pack cache test\n" * 100
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache.open(tmp_path / "cache")


def test_layout_is_sha256_two_hex_then_full_hex(cache: Cache) -> None:
    digest = cache.put_bytes(DATA, name="a.bin")
    assert digest == SHA
    path = cache.path_of(SHA, verify=True)
    assert path == cache.root / "cas" / "sha256" / SHA[:2] / SHA
    assert path.read_bytes() == DATA
    assert cache.has(SHA)
    assert cache.describe(SHA)["names"] == ["a.bin"]


def test_root_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUEST_PACK_CACHE", str(tmp_path / "elsewhere"))
    assert default_root() == tmp_path / "elsewhere"
    assert Cache.open().root == tmp_path / "elsewhere"


def test_put_file_with_wrong_expected_hash_stores_nothing(cache: Cache, tmp_path: Path) -> None:
    src = tmp_path / "model.onnx"
    src.write_bytes(DATA)
    with pytest.raises(IntegrityError) as e:
        cache.put_file(src, "0" * 64)
    assert str(src) in str(e.value)
    assert not cache.has(SHA) and not cache.has("0" * 64)
    assert list((cache.root / "tmp").iterdir()) == []


def test_flipped_byte_is_caught_and_names_the_file(cache: Cache) -> None:
    cache.put_bytes(DATA)
    path = cache.object_path(SHA)
    path.chmod(0o644)
    raw = bytearray(path.read_bytes())
    raw[10] ^= 0x01
    path.write_bytes(bytes(raw))
    # same size, so only the full rehash sees it
    assert cache.path_of(SHA, size=len(DATA)) == path
    with pytest.raises(IntegrityError) as e:
        cache.path_of(SHA, verify=True, name="libc6_2.36_amd64.deb")
    assert "libc6_2.36_amd64.deb" in str(e.value) and str(path) in str(e.value)
    assert e.value.return_code == 1


def test_truncated_object_fails_the_size_check(cache: Cache) -> None:
    cache.put_bytes(DATA)
    path = cache.object_path(SHA)
    path.chmod(0o644)
    path.write_bytes(DATA[:-1])
    with pytest.raises(IntegrityError):
        cache.path_of(SHA, size=len(DATA))


def test_missing_object(cache: Cache) -> None:
    with pytest.raises(CacheMissError) as e:
        cache.path_of(SHA, name="model.onnx")
    assert "model.onnx" in str(e.value) and "request-pack fetch" in str(e.value)


def test_fetch_file_url_verifies(cache: Cache, tmp_path: Path) -> None:
    src = tmp_path / "x.bin"
    src.write_bytes(DATA)
    path = cache.fetch_url(src.as_uri(), SHA, name="x.bin")
    assert path.read_bytes() == DATA
    assert cache.describe(SHA)["urls"] == [src.as_uri()]
    other = tmp_path / "y.bin"
    other.write_bytes(DATA + b"!")
    with pytest.raises(IntegrityError) as e:
        cache.fetch_url(other.as_uri(), "1" * 64)
    assert other.as_uri() in str(e.value)
    assert not cache.has("1" * 64)


def test_fetch_http_streams_and_verifies(cache: Cache, tmp_path: Path) -> None:
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "f.deb").write_bytes(DATA)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(tmp_path / "srv"), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/f.deb"
        assert cache.fetch_url(url, SHA).read_bytes() == DATA
        with pytest.raises(NetworkUnavailable):
            cache.fetch_url(url.replace("f.deb", "absent.deb"), "2" * 64)
    finally:
        server.shutdown()


def test_rejects_non_hex_digest(cache: Cache) -> None:
    with pytest.raises(ValueError):
        cache.object_path("../../etc/passwd")
