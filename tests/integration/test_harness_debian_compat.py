"""The reference backend, fingerprint and preprocessing under Debian's own python3-onnx 1.12,
python3-numpy 1.24 and python3-pil 9.4 (bookworm's /usr/bin/python3).

Those are the only versions armv7 images can have (no onnxruntime wheel there), so
the harness's pure-numpy path must run on them and compute what the pip-installed
stack computes: bit-identical preprocessed tensors, the same fingerprint, and
logits within float32 noise of onnxruntime. The amd64 Debian packages are the same
source versions as the armhf ones. Set-up: ``apt-get install python3-onnx python3-numpy python3-pil``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from packager.harness.backends import BackendOptions, create
from packager.harness.fingerprint import fingerprint
from packager.harness.preprocess import (
    PreprocessParams,
    preprocess_bytes,
    tensor_sha256,
)
from packager.harness.tinynet import build

REPO = Path(__file__).resolve().parents[2]
DEBIAN_PYTHON = Path("/usr/bin/python3")

SCRIPT = r"""
import json, sys
from pathlib import Path
import numpy as np, onnx
from packager.harness.backends.reference import ReferenceBackend
from packager.harness.backends.base import BackendOptions
from packager.harness.fingerprint import fingerprint
from packager.harness.preprocess import PreprocessParams, preprocess_bytes, tensor_sha256
model, images = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
p = PreprocessParams(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
x = np.stack([preprocess_bytes(i.read_bytes(), p) for i in images])
r = ReferenceBackend(); r.load(model, BackendOptions())
print(json.dumps({"versions": [onnx.__version__, np.__version__], "inputs": [tensor_sha256(t) for t in x],
                  "logits": r.run(x).tolist(), "fingerprint": fingerprint(model).to_dict()}))
"""


def test_reference_path_on_debian_onnx_112_and_numpy_124(tmp_path, shared_sample):
    probe = subprocess.run([str(DEBIAN_PYTHON), "-c", "import onnx, numpy, PIL"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(f"Debian's python3 lacks onnx/numpy/PIL ({probe.stderr.strip().splitlines()[-1:]}); "
                    "fix: apt-get install python3-onnx python3-numpy python3-pil", pytrace=False)
    model = build(tmp_path / "tiny.onnx")
    images = sorted((shared_sample / "images").iterdir())[:4]
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    p = subprocess.run([str(DEBIAN_PYTHON), "-c", SCRIPT, str(model), *map(str, images)], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got["versions"][0].startswith("1.12") and got["versions"][1].startswith("1.24"), got["versions"]

    params = PreprocessParams(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    x = np.stack([preprocess_bytes(i.read_bytes(), params) for i in images])
    assert got["inputs"] == [tensor_sha256(t) for t in x]  # bit-identical inputs across Pillow/numpy versions
    ort = create("onnxruntime")
    ort.load(model, BackendOptions(threads=2))
    want = ort.run(x)
    logits = np.array(got["logits"], dtype=np.float32)
    assert np.abs(logits - want).max() < 1e-3
    assert (logits.argmax(1) == want.argmax(1)).all()
    assert got["fingerprint"] == fingerprint(model).to_dict()
