"""A hostile registry (``_hostile_registry``) against the real request-pack side: real skopeo, real docker.

Every generated case is served by a real HTTP server on 127.0.0.1 under the digest of its
own bytes; ``resolve`` (or, for the cases that get past it, the copy into docker) must refuse
it with the case's exit code in one line, in bounded time; the genuine image must resolve,
load and run. A few cases go through the real CLI (``request-pack evaluate --image``; ``run`` has no --image).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import _hostile_registry as H

from packager.engine.registry import parse_reference, resolve
from packager.errors import RequestPackError
from packager.platforms import Platform

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "request-pack"
# A slow server is cut off after this long (the default is 60 s; a test cannot wait that).
TIMEOUT = "3"
CASES = H.cases()
RESOLVED = [c for c in CASES if not c.loads]
LOADED = [c for c in CASES if c.loads]


@pytest.fixture(scope="module")
def registry():
    reg = H.HostileRegistry()
    server = reg.serve()
    yield reg, H.add_genuine(reg)
    reg.stop.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def served(registry, monkeypatch):
    """(registry, genuine image); documents are content-addressed, so cases share the server, not behaviours."""
    monkeypatch.setenv("REQUEST_PACK_REGISTRY_TIMEOUT", TIMEOUT)
    monkeypatch.setenv("REQUEST_PACK_REGISTRY_COPY_TIMEOUT", TIMEOUT)
    yield registry
    registry[0].behaviours.clear()


def _outcome(call) -> tuple[int, str, float]:
    t0 = time.monotonic()
    try:
        call()
        code, message = 0, ""
    except RequestPackError as e:
        code, message = e.return_code, str(e)
    return code, message, time.monotonic() - t0


def test_generator_covers_every_class():
    groups = {c.group for c in CASES}
    assert groups >= {"not-json", "ill-formed-entry", "ambiguous", "too-large", "not-a-manifest", "config-lies",
                      "swap", "layer", "server"}
    assert len(CASES) >= 80 and len({c.name for c in CASES}) == len(CASES)


def test_genuine_resolves(served):
    reg, g = served
    for digest, index in ((g.index, g.index), (g.manifest, None)):
        pulled = resolve(parse_reference(reg.ref(digest)), Platform.AMD64)
        assert (pulled.index_digest, pulled.manifest_digest, pulled.config_digest) == (index, g.manifest, g.config)


@pytest.mark.parametrize("case", RESOLVED, ids=[c.name for c in RESOLVED])
def test_resolve_refuses(served, case):
    reg, g = served
    ref = parse_reference(reg.ref(case.make(reg, g)))
    pulled = []
    code, message, took = _outcome(lambda: pulled.append(resolve(ref, Platform.AMD64)))
    assert code == case.code, message
    if code == 0:  # what the spec allows (or a body cut at its announced length) still gives the genuine image
        assert (pulled[0].manifest_digest, pulled[0].config_digest) == (g.manifest, g.config)
    assert case.message in message and "\n" not in message, message
    if code:
        assert f"127.0.0.1:{reg.port}/{H.REPO}" in message  # names the source
    assert took < float(TIMEOUT) + 3


@pytest.mark.parametrize("engine_name", [pytest.param("docker", marks=pytest.mark.docker),
                                         pytest.param("podman", marks=pytest.mark.podman)])
@pytest.mark.parametrize("case", [None, *LOADED], ids=["genuine", *[c.name for c in LOADED]])
def test_copy_into_engine_refuses(served, case, engine_name, monkeypatch):
    """Past ``resolve`` only the copy can tell: wrong bytes, a bomb, a cut or a stalled layer."""
    from packager.engine import get_engine
    from packager.run.image import ImageRef, ensure_image

    reg, g = served
    if case is not None and case.name == "layer-bomb":
        monkeypatch.setenv("REQUEST_PACK_MAX_UNPACKED", str(16 * H.MiB))  # the bomb unpacks to 64 MiB
    pulled = resolve(parse_reference(reg.ref(case.make(reg, g) if case else g.index)), Platform.AMD64)
    engine = get_engine(engine_name)
    engine.remove_image(pulled.config_digest)
    ref = ImageRef("hostile", Platform.AMD64, pulled.config_digest, pulled.manifest_digest, pulled.index_digest,
                   source=pulled.source, source_args=pulled.skopeo_args())
    try:
        code, message, took = _outcome(lambda: ensure_image(engine, ref))
        if case is None or case.code == 0:
            assert code == 0, message
            out = engine.run(pulled.config_digest, ["echo", "genuine"], platform=Platform.AMD64)
            assert (out.returncode, out.stdout.strip()) == (0, "genuine")
        else:
            assert code == case.code and case.message in message and "\n" not in message, message
            assert engine.inspect_image(pulled.config_digest) is None
        assert took < float(TIMEOUT) + 35
    finally:
        engine.remove_image(f"request-pack/hostile:{Platform.AMD64.slug}")


CLI_CASES = ["not-an-object-list", "index-no-digest", "index-arch-number", "config-says-arm64", "slow-index",
             "index-100000-entries", "redirect-loop-index"]


@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_evaluate_image_refuses(served, name, tmp_path):
    reg, g = served
    case = next(c for c in CASES if c.name == name)
    env = {**os.environ, "REQUEST_PACK_REGISTRY_TIMEOUT": TIMEOUT, "DOCKER_API_VERSION": "1.41", "COLUMNS": "1000"}
    t0 = time.monotonic()
    proc = subprocess.run([str(CLI), "evaluate", str(REPO_ROOT / "tests" / "data" / "build-small"), "--image",
                           reg.ref(case.make(reg, g)), "--out", str(tmp_path / "out")],  # the default data set: the shared sample
                          check=False, capture_output=True, text=True, env=env, timeout=60)
    took = time.monotonic() - t0
    output = proc.stdout + proc.stderr
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert proc.returncode == case.code, output
    assert len(errors) == 1 and case.message in errors[0] and "Traceback" not in output, output  # INFO lines aside
    print(f"{name}: exit {proc.returncode} in {took:.1f} s: {errors[0]}")
    assert took < float(TIMEOUT) + 15


def test_farm_in_registry_is_bounded(served):
    """The farm asks whether the registry has an index before pushing: a server that stalls is cut off.

    skopeo's own deadline answers first ("not there": the push that follows has its deadline too);
    the subprocess timeout behind it is an ImageNotAvailable, never a TimeoutExpired traceback."""
    from packager.farm.images import in_registry

    reg, g = served
    assert in_registry(reg.ref(g.index)) is True
    assert in_registry(reg.ref("sha256:" + "4" * 64)) is False
    reg.behaviours[g.index] = H.Behaviour("slow")
    t0 = time.monotonic()
    assert in_registry(reg.ref(g.index)) is False
    assert time.monotonic() - t0 < float(TIMEOUT) + 12
