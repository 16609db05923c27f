"""The one preprocessing implementation every backend is fed from (input equivalence).

Version 1, step by step (the order is part of the version):

1. decode with Pillow and convert to RGB, always: some ImageNet JPEGs are
   greyscale or CMYK, and a model expects three channels;
2. resize so the shorter side is ``resize`` pixels, the longer side
   ``int(resize * long / short)`` (torchvision's ``Resize(int)`` rule), with the
   given Pillow filter;
3. centre crop ``crop`` x ``crop``, top/left ``round((size - crop) / 2)``
   (torchvision's ``CenterCrop`` rule);
4. float32, times ``scale``, minus ``mean``, divided by ``std`` (per channel,
   in RGB order);
5. reorder channels to ``color`` (RGB or BGR) and transpose to ``layout``
   (CHW or HWC; the batch axis is added when batching).

Decoding is expensive next to the model (about 9 ms per image on two cores), so
``preprocess_all`` runs it in worker processes before any timing starts, and
caches the result of steps 1-3 as ``.npy`` under
``<cache>/crops/<params-hash>/<image-sha256>.npy``. Those are the uint8 pixels
Pillow produced, so step 4 applied when a tensor is loaded gives bit-for-bit the
tensor ``preprocess_bytes`` gives, from a quarter of the bytes (147 KiB, not
588 KiB, at 224x224): the whole 50,000-image validation set fits in 7.0 GiB.
The cache lives wherever ``--cache`` points; the runner mounts a host directory
there, because the sandbox's scratch tmpfs cannot hold a real data set. A cache
without room for what is still to decode is a ``NoSpace`` naming the directory
and the bytes needed, checked before decoding and again on every write.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import multiprocessing
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from packager.harness.errors import ConfigError, CorruptImage, NoSpace

log = logging.getLogger(__name__)

PREPROCESS_VERSION = 1
SUPPORTED_VERSIONS = (1,)
_FILTERS = ("bilinear", "bicubic", "nearest", "lanczos")


@dataclass(frozen=True)
class PreprocessParams:
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    version: int = PREPROCESS_VERSION
    resize: int = 256
    crop: int = 224
    scale: float = 1.0 / 255.0
    layout: str = "NCHW"
    color: str = "RGB"
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.version not in SUPPORTED_VERSIONS:
            raise ConfigError(f"preprocessing version {self.version} is not implemented (have {SUPPORTED_VERSIONS})", field="preprocessing.version")
        if self.layout not in ("NCHW", "NHWC"):
            raise ConfigError(f"layout {self.layout!r} is not NCHW or NHWC", field="preprocessing.layout")
        if self.color not in ("RGB", "BGR"):
            raise ConfigError(f"color {self.color!r} is not RGB or BGR", field="preprocessing.color")
        if self.interpolation not in _FILTERS:
            raise ConfigError(f"interpolation {self.interpolation!r} not in {_FILTERS}", field="preprocessing.interpolation")
        if not (0 < self.crop <= self.resize):
            raise ConfigError(f"crop {self.crop} must be in 1..resize ({self.resize})", field="preprocessing.crop")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s == 0 for s in self.std):
            raise ConfigError("mean and std need three values, std non-zero", field="preprocessing.std")

    @classmethod
    def from_mapping(cls, data: dict) -> "PreprocessParams":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown preprocessing key(s) {unknown}", field="preprocessing")
        if "mean" not in data or "std" not in data:
            raise ConfigError("preprocessing needs mean and std", field="preprocessing")
        d = dict(data)
        d["mean"] = tuple(float(x) for x in d["mean"])
        d["std"] = tuple(float(x) for x in d["std"])
        return cls(**d)

    def digest(self) -> str:
        """Identifies the tensors these parameters produce: part of every cache key."""
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, self.crop, self.crop) if self.layout == "NCHW" else (self.crop, self.crop, 3)


def _pil_filter(name: str):
    from PIL import Image

    return {
        "bilinear": Image.BILINEAR,
        "bicubic": Image.BICUBIC,
        "nearest": Image.NEAREST,
        "lanczos": Image.LANCZOS,
    }[name]


def decode_crop(data: bytes, params: PreprocessParams, *, name: str = "<bytes>") -> np.ndarray:
    """Steps 1-3 of one image: uint8 (crop, crop, 3) RGB pixels."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            img = im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise CorruptImage(name, str(e) or type(e).__name__) from None
    w, h = img.size
    if w < 1 or h < 1:
        raise CorruptImage(name, f"empty image {w}x{h}")
    r = params.resize
    if w <= h:
        nw, nh = r, int(r * h / w)
    else:
        nw, nh = int(r * w / h), r
    img = img.resize((nw, nh), _pil_filter(params.interpolation))
    c = params.crop
    top = int(round((nh - c) / 2.0))
    left = int(round((nw - c) / 2.0))
    img = img.crop((left, top, left + c, top + c))
    return np.asarray(img, dtype=np.uint8)  # H, W, 3 in RGB


def normalize(pixels: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """Steps 4-5 of uint8 RGB pixels, (H, W, 3) or a batch (N, H, W, 3); float32, C-contiguous.

    The channel flip and the layout move come first, on the pixels (views), and the one float32
    copy is then scaled and normalised in place, per channel: the same float32 operations on the
    same values as ``(x * scale - mean) / std`` in RGB/HWC, so the same bits, but at its peak one
    float32 set instead of three (the performance set of 256 images was 460 MB of temporaries).
    """
    x = np.asarray(pixels)
    mean = np.asarray(params.mean, dtype=np.float32)
    std = np.asarray(params.std, dtype=np.float32)
    if params.color == "BGR":
        x, mean, std = x[..., ::-1], mean[::-1], std[::-1]
    if params.layout == "NCHW":
        x = np.moveaxis(x, -1, -3)
        mean, std = mean[:, None, None], std[:, None, None]
    arr = np.array(x, dtype=np.float32, order="C", copy=True)  # always a fresh array: the caller's is never changed
    arr *= np.float32(params.scale)
    arr -= mean
    arr /= std
    return arr


def preprocess_bytes(data: bytes, params: PreprocessParams, *, name: str = "<bytes>") -> np.ndarray:
    """Decode and transform one image; returns float32 (C,H,W) or (H,W,C), C-contiguous."""
    return normalize(decode_crop(data, params, name=name), params)


def tensor_sha256(arr: np.ndarray) -> str:
    """Hash of a tensor's float32 C-order bytes, the form recorded in predictions.jsonl."""
    return hashlib.sha256(np.ascontiguousarray(arr, dtype=np.float32).tobytes()).hexdigest()


CROP_DIR = "crops"  # uint8 crops; "preprocessed/" held float32 tensors (4x the bytes) before


@dataclass(frozen=True)
class Prepared:
    """Where one sample's cached crop lives, what it was made from, and how to finish it."""

    path: Path
    image_sha256: str
    params: PreprocessParams


@dataclass(frozen=True)
class TensorCache:
    root: Path
    params: PreprocessParams

    @property
    def dir(self) -> Path:
        return Path(self.root) / CROP_DIR / self.params.digest()[:32]

    def path_for(self, image_sha256: str) -> Path:
        return self.dir / f"{image_sha256}.npy"

    def entry_bytes(self) -> int:
        """What one cached crop takes on disk: the pixels plus the .npy header."""
        return self.params.crop * self.params.crop * 3 + 128


def default_cache_dir() -> Path:
    env = os.environ.get("REQUEST_PACK_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "request-pack"


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _prepare_one(job: tuple[str, str, dict]) -> tuple[str, str, str | None]:
    """Worker: hash the image, decode it unless cached, store the crop atomically.

    Errors come back as a reason string: our exception types do not survive
    pickling across the process boundary with their arguments intact. A full
    cache comes back as the reason ``"nospace"``.
    """
    path = job[0]
    try:
        return _prepare(job) + (None,)
    except CorruptImage as e:
        return path, "", e.reason
    except OSError as e:
        if e.errno in _NO_SPACE:
            return path, "", "nospace"
        raise


def _prepare(job: tuple[str, str, dict]) -> tuple[str, str]:
    path, cache_root, params_d = job
    params = PreprocessParams.from_mapping(params_d)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CorruptImage(path, f"cannot read: {e.strerror or e}") from None
    digest = hashlib.sha256(data).hexdigest()
    out = TensorCache(Path(cache_root), params).path_for(digest)
    if not out.is_file():
        crop = decode_crop(data, params, name=path)
        fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, crop, allow_pickle=False)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return str(out), digest


def check_room(cache: TensorCache, todo: int) -> None:
    """Refuse to start decoding into a cache that cannot take what is not cached yet.

    The entries already there are an upper bound on how many of ours are cached
    (counting them is a directory listing, hashing our images is a pass over the data)."""
    have = sum(1 for _ in os.scandir(cache.dir)) if cache.dir.is_dir() else 0
    needed = max(0, todo - have) * cache.entry_bytes()
    free = _free_bytes(cache.dir)
    if needed > free:
        raise NoSpace(cache.dir, needed, free)


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def preprocess_all(paths: Sequence[Path], params: PreprocessParams, cache_root: Path, *, workers: int | None = None) -> list[Prepared]:
    """Preprocess every image into the cache (in parallel), in input order."""
    params_d = asdict(params)
    params_d["mean"], params_d["std"] = list(params.mean), list(params.std)
    cache = TensorCache(Path(cache_root), params)
    try:
        cache.dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if e.errno in _NO_SPACE:
            raise NoSpace(cache.dir, cache.entry_bytes() * len(paths), _free_bytes(Path(cache_root))) from None
        raise
    check_room(cache, len(paths))
    jobs = ((str(p), str(cache_root), params_d) for p in paths)
    n = workers if workers is not None else min(len(os.sched_getaffinity(0)), 8)
    prepared: list[Prepared] = []

    def collect(results) -> None:
        for k, (p, d, err) in enumerate(results):
            if err == "nospace":
                # Each remaining image may need an entry; the ones done are on disk already.
                raise NoSpace(cache.dir, (len(paths) - k) * cache.entry_bytes(), _free_bytes(cache.dir))
            if err is not None:
                raise CorruptImage(p, err)
            prepared.append(Prepared(Path(p), d, params))

    if n <= 1 or len(paths) < 4:
        collect(map(_prepare_one, jobs))
    else:
        # spawn, not fork: the model (and its runtime's thread pool) may already be loaded, and
        # forking a process with live threads can deadlock in the child. imap, not map: results
        # arrive (and a failure stops the pool) as they come, with no second list of all jobs.
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(n) as pool:
            collect(pool.imap(_prepare_one, jobs, chunksize=max(1, min(64, len(paths) // (n * 8)))))
    log.info("preprocessed %d image(s) into %s", len(paths), cache.dir)
    return prepared


def load_crop(prepared: Prepared) -> np.ndarray:
    """The cached uint8 pixels of one sample (steps 1-3)."""
    return np.load(prepared.path, allow_pickle=False)


def load_tensor(prepared: Prepared) -> np.ndarray:
    return normalize(load_crop(prepared), prepared.params)


def load_batch(items: Sequence[Prepared]) -> np.ndarray:
    if not items:
        raise ValueError("load_batch needs at least one item")
    return normalize(np.stack([load_crop(p) for p in items]), items[0].params)
