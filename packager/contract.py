"""What the image, the runner and a Kubernetes pod agree on: the image contract.

The build writes these into every image (user, paths, environment, entrypoint);
the runner and the farm's pod spec start the harness with them. One home, so a
change here changes all three sides at once. Nothing here imports anything.
"""

from __future__ import annotations

# The unprivileged user the harness runs as, in the image's /etc/passwd and in every sandbox.
RUNNER_USER = "runner"
RUNNER_UID = 1000

# Where the image keeps the harness, the model and the baked manifest sections.
APP_DIR = "opt/request"  # relative: layer entries are written without a leading slash
MODEL_PATH = f"/{APP_DIR}/model.onnx"
CONFIG_PATH = f"/{APP_DIR}/request.json"

ENTRYPOINT = ("python3", "-m", "packager.harness")
ENV = (
    ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    ("LANG", "C.UTF-8"),
    ("PYTHONPATH", f"/{APP_DIR}"),
    ("PYTHONDONTWRITEBYTECODE", "1"),
    ("REQUEST_MODEL", MODEL_PATH),
    ("REQUEST_CONFIG", CONFIG_PATH),
)

# Mounts every sandbox gives the harness: the dataset read-only, the only writable
# output directory, and a scratch tmpfs (the root filesystem is read-only).
DATA_MOUNT = "/data"
OUT_MOUNT = "/out"
SCRATCH = "/tmp"
SCRATCH_SIZE_BYTES = 2 * 1024**3
# The harness's preprocessed-tensor cache (--cache). The runner binds a host directory over it,
# read-write (under the request-pack cache, reused across runs, keyed by content): the scratch
# tmpfs cannot hold a real data set (50,000 crops are 7 GiB). A mount inside /tmp leaves the
# harness's argument vector the same with or without it; a pod without a volume there caches
# in its scratch, and a data set too large for it stops with the harness's NoSpace error.
CACHE_MOUNT = f"{SCRATCH}/cache"


def scratch_tmpfs(size_bytes: int = SCRATCH_SIZE_BYTES) -> str:
    """The scratch tmpfs's mount options for a size in bytes (docker takes a k/m/g suffix)."""
    size = f"{size_bytes // 1024**3}g" if size_bytes % 1024**3 == 0 else f"{-(-size_bytes // 1024**2)}m"
    return f"rw,exec,nosuid,nodev,size={size}"


# Fixed so a result says exactly what confined it; recorded verbatim in system.json.
SANDBOX: dict[str, object] = {
    "network": "none",
    "read_only_rootfs": True,
    # exec: TVM links the compiled model into a .so in scratch and dlopens it; docker's
    # tmpfs default is noexec. The root filesystem stays read-only, so nothing persists.
    "tmpfs": {SCRATCH: scratch_tmpfs()},
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "user": f"{RUNNER_UID}:{RUNNER_UID}",
    "ulimits": {"nofile": 20000, "nproc": 4096},
    "pids_limit": 4096,
    "init": True,  # see ContainerSpec.init: a crash under emulation must end the run, not hang it
    "dataset": f"{DATA_MOUNT} (read-only)",
    "output": f"{OUT_MOUNT} (the only writable mount)",
}

# What the runner writes for the harness when the image carries no baked config.
RUN_CONFIG = "run-config.json"

# The build record beside the OCI layout (build/<name>/) and inside a bundle: one name for one document.
BUILD_RECORD_NAME = "build-record.json"


def harness_argv(*, config: str, model: str, out: str, stage: str, image_digest: str | None = None,
                 platform: str | None = None) -> list[str]:
    """The harness's command line as both the runner and a pod give it (see packager/harness/__main__.py)."""
    argv = ["--config", config, "--model", model, "--dataset", DATA_MOUNT, "--out", out,
            "--cache", CACHE_MOUNT, "--stage", stage]
    if image_digest is not None:
        argv += ["--image-digest", image_digest]
    if platform is not None:
        argv += ["--platform", platform]
    return argv
