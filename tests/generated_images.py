"""Data sets of distinct JPEGs generated from the shared sample, for tests and benchmarks of large runs.

Image *i* is sample image ``i % 200`` cropped by a random 80-100 % of each side, with
a few pixels of seeded noise, re-encoded at a random JPEG quality in 70..95: every file
differs (so a cache keyed by content holds one entry per image), sizes and decode
costs stay those of real ImageNet photos. Labels are the source image's, which makes
any accuracy figure on them meaningless as a measure of the model: they are not
ImageNet validation images. Nothing generated is ever stored in git.
"""

from __future__ import annotations

import io
import multiprocessing
from pathlib import Path

SAMPLE_SIZE = 200


def _sources(sample: Path) -> list[tuple[str, int]]:
    header, *rows = (sample / "labels.tsv").read_text().splitlines()
    cols = header.split("\t")
    fi, ci = cols.index("file"), cols.index("class_index")
    return [(r.split("\t")[fi], int(r.split("\t")[ci])) for r in rows]


def _make(job: tuple[str, str, list[int]]) -> None:
    """Images ``numbers`` of one source: ``pattern.format(number)`` each, seeded by the number."""
    import numpy as np
    from PIL import Image

    src, pattern, numbers = job
    with Image.open(src) as im:
        base = im.convert("RGB")
    for i in numbers:
        rng = np.random.default_rng(i)
        w, h = base.size
        cw, ch = int(w * rng.uniform(0.8, 1.0)), int(h * rng.uniform(0.8, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        arr = np.asarray(base.crop((x, y, x + cw, y + ch))).copy()
        patch = arr[:8, :8]
        arr[:8, :8] = np.clip(patch.astype(np.int16) + rng.integers(-3, 4, patch.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=int(rng.integers(70, 96)))
        Path(pattern.format(i)).write_bytes(buf.getvalue())


def generate(root: Path, n: int, sample: Path, *, layout: str = "ilsvrc2012-val", workers: int = 2) -> Path:
    """``n`` distinct images in ``root`` (ILSVRC2012 layout with val.txt, or labels-tsv); reused when complete."""
    root = Path(root)
    sources = _sources(sample)
    done = root / ".complete"
    if done.is_file() and done.read_text() == f"{n} {layout}\n":
        return root
    images = root if layout == "ilsvrc2012-val" else root / "images"
    images.mkdir(parents=True, exist_ok=True)
    name = "ILSVRC2012_val_{:08d}.JPEG" if layout == "ilsvrc2012-val" else "gen_{:08d}.JPEG"
    numbers = range(1, n + 1)  # ILSVRC2012 numbers its validation images from 1
    # One job per source and run of up to 64 images: a source is decoded once per job, not per image.
    jobs = []
    for k, (file, _) in enumerate(sources):
        mine = [i for i in numbers[k::len(sources)]]
        for start in range(0, len(mine), 64):
            jobs.append((str(sample / "images" / file), str(images / name), mine[start:start + 64]))
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for _ in pool.imap_unordered(_make, jobs):
            pass
    labels = [(name.format(i), sources[(i - 1) % len(sources)][1]) for i in numbers]
    if layout == "ilsvrc2012-val":
        (root / "val.txt").write_text("".join(f"{f} {c}\n" for f, c in labels))
    else:
        (root / "labels.tsv").write_text("file\tclass_index\n" + "".join(f"{f}\t{c}\n" for f, c in labels))
    done.write_text(f"{n} {layout}\n")
    return root
