"""download.fetch against a real HTTP server on 127.0.0.1: retries, resume by Range, fallback, permanent failures."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from collections import defaultdict
from pathlib import Path

import pytest

from packager.cache import Cache
from packager.errors import DownloadFailed
from packager.inputs import download

DATA = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(DATA).hexdigest()
FAST = download.Policy(attempts=4, backoff=0.01, timeout=5)


class Server:
    """A loopback HTTP server whose paths misbehave on purpose, counting requests and recording Range headers."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = defaultdict(int)
        self.ranges: list[str | None] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                owner.requests[self.path] += 1
                n = owner.requests[self.path]
                rng = self.headers.get("Range")
                if self.path == "/flaky.bin":
                    owner.ranges.append(rng)
                    if n == 1:  # half the body, then the connection drops
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(DATA)))
                        self.end_headers()
                        self.wfile.write(DATA[: len(DATA) // 2])
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if n == 2:
                        return self._status(503)
                    return self._send(DATA, rng)
                if self.path == "/good.bin":
                    return self._send(DATA, rng)
                if self.path == "/wrong.bin":
                    return self._send(b"x" * len(DATA), None)
                return self._status(404)

            def _status(self, code: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _send(self, data: bytes, rng: str | None) -> None:
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    with Server() as s:
        yield s


def test_transient_failures_are_retried_and_the_download_resumes(tmp_path: Path, server: Server) -> None:
    cache = Cache.open(tmp_path)
    path = download.fetch(cache, SHA, [f"{server.url}/flaky.bin"], name="linux/amd64 deb flaky.bin", size=len(DATA),
                          policy=FAST)
    assert path.read_bytes() == DATA
    # reset mid-body, then a 503, then the rest: the third request asks only for the second half
    assert server.requests["/flaky.bin"] == 3
    assert server.ranges == [None, f"bytes={len(DATA) // 2}-", f"bytes={len(DATA) // 2}-"]
    assert not download.partial_path(cache, SHA).exists()
    assert cache.describe(SHA)["urls"] == [f"{server.url}/flaky.bin"]


def test_a_404_moves_to_the_next_location_at_once(tmp_path: Path, server: Server) -> None:
    cache = Cache.open(tmp_path)
    download.fetch(cache, SHA, [f"{server.url}/gone.deb", f"{server.url}/good.bin"], name="deb x", policy=FAST)
    assert cache.has(SHA)
    assert server.requests["/gone.deb"] == 1  # a 404 is not retried


def test_every_location_failing_names_the_entry_and_each_location(tmp_path: Path, server: Server) -> None:
    cache = Cache.open(tmp_path)
    urls = [f"{server.url}/gone.deb", f"{server.url}/wrong.bin"]
    with pytest.raises(DownloadFailed) as e:
        download.fetch(cache, SHA, urls, name="linux/arm64 deb libc6_2.36_arm64.deb", policy=FAST)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("linux/arm64 deb libc6_2.36_arm64.deb: cannot download from any location")
    assert f"{urls[0]}: HTTP 404" in msg and f"{urls[1]}: sha256 mismatch" in msg
    assert e.value.return_code == 3
    assert server.requests["/wrong.bin"] == 1  # a hash mismatch is not retried either
    assert not cache.has(SHA) and not download.partial_path(cache, SHA).exists()


def test_a_refused_connection_is_retried_then_reported(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    slept: list[float] = []
    policy = download.Policy(attempts=3, backoff=0.5, timeout=2, sleep=slept.append)
    with pytest.raises(DownloadFailed, match="gave up after 3 attempts"):
        download.fetch(Cache.open(tmp_path), SHA, [f"http://127.0.0.1:{port}/x.deb"], name="deb x.deb", policy=policy)
    assert slept == [0.5, 1.0]  # exponential backoff


def test_dns_try_again_is_transient_and_an_unknown_name_is_not() -> None:
    again = download._classify(socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), "u")
    unknown = download._classify(socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "u")
    assert type(again).__name__ == "_Transient" and type(unknown).__name__ == "_Permanent"


def test_an_object_already_cached_contacts_nobody(tmp_path: Path) -> None:
    cache = Cache.open(tmp_path)
    cache.put_bytes(DATA, SHA)
    assert download.fetch(cache, SHA, ["http://127.0.0.1:9/never"], name="x", policy=FAST).read_bytes() == DATA


def test_a_host_that_gave_up_is_skipped_for_the_next_files(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    slept: list[float] = []
    policy = download.Policy(attempts=2, backoff=0.1, timeout=2, sleep=slept.append)
    cache = Cache.open(tmp_path)
    for i in range(3):
        with pytest.raises(DownloadFailed):
            download.fetch(cache, f"{i}" * 64, [f"http://127.0.0.1:{port}/{i}.deb"], name=f"deb {i}.deb", policy=policy)
    assert slept == [0.1]  # only the first file waited
