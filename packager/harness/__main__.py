"""``python -m packager.harness``: evaluate a model on a dataset inside the image.

Exit codes follow ``packager.errors``: 0 success, 1 a check failed (output
mismatch, top-1 below the stage floor), 2 bad input (corrupt image, missing
label, model/config mismatch; the message names the file), 3 something the
environment lacks (framework not importable).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from packager.errors import RequestPackError
from packager.harness.config import build_config, load_config_file
from packager.harness.dataset import resolve
from packager.harness.preprocess import default_cache_dir


def _csv_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m packager.harness", description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, help="JSON with the manifest's sections (preprocessing, run, model, framework, dataset, target)")
    p.add_argument("--model", type=Path, required=True, help="ONNX model file")
    p.add_argument("--dataset", type=Path, required=True, help="dataset directory")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--cache", type=Path, help="cache directory (default $REQUEST_PACK_CACHE or ~/.cache/request-pack)")
    p.add_argument("--backend", choices=["onnxruntime", "reference", "tvm"])
    p.add_argument("--stage", choices=["functional", "full"], default="functional")
    p.add_argument("--samples", type=int, help="evaluate the first N samples")
    p.add_argument("--ids", type=Path, help="file with one sample id per line to evaluate")
    p.add_argument("--layout", choices=["auto", "labels-tsv", "ilsvrc2012-val"],
                   help="dataset layout (default: detected from the directory; the config's is the first guess)")
    p.add_argument("--labels", help="labels or ground-truth file, relative to the dataset (default: the layout's usual)")
    p.add_argument("--images", help="images directory, relative to the dataset")
    p.add_argument("--synsets", help="devkit synsets mapping (ilsvrc2012_id<TAB>wnid), relative to the dataset")
    p.add_argument("--batch-sizes", type=_csv_ints, help="comma-separated Offline batch sizes")
    p.add_argument("--scenarios", type=lambda s: s.split(","), help="SingleStream,MultiStream,Offline")
    p.add_argument("--warmup", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--run-config", metavar="JSON", help="run-time knobs as JSON (packager/runconfig.py), recorded in metrics.json")
    p.add_argument("--min-duration", type=float, dest="min_duration_s")
    p.add_argument("--queries", type=int, dest="single_stream_queries", help="SingleStream queries (minimum)")
    p.add_argument("--multistream-queries", type=int, help="MultiStream queries of 8 samples (minimum; quick mode)")
    p.add_argument("--offline-samples", type=int, dest="offline_min_samples", help="Offline samples per batch size (minimum)")
    p.add_argument("--performance-samples", type=int, help="in-memory sample set for the scenarios")
    p.add_argument("--driver", choices=["auto", "builtin"], help="auto: LoadGen when importable")
    p.add_argument("--resume", action="store_true", help="keep predictions.jsonl and skip the ids in it")
    p.add_argument("--reference-outputs", type=Path, help=".npz (ids, outputs) or predictions.jsonl to validate against")
    p.add_argument("--atol", type=float)
    p.add_argument("--save-outputs", action="store_true", help="also write raw outputs to outputs.npz")
    p.add_argument("--image-digest", help="digest of the image this runs in, recorded in system.json")
    p.add_argument("--platform", help="OCI platform recorded in metrics.json (default: from the machine)")
    p.add_argument("--power-probe", choices=["none", "rapl", "ina3221", "command"])
    p.add_argument("--workers", type=int, help="preprocessing worker processes")
    p.add_argument("--mode", choices=["quick", "submission"], help="quick (default) or submission: LoadGen from mlperf.conf + user.conf")
    p.add_argument("--execution", choices=["native", "emulated"], help="recorded in the result's measurement class (the runner knows; default native)")
    p.add_argument("--skip-performance", metavar="REASON", dest="performance_skipped", help="run no performance scenario, recording why")
    p.add_argument("--user-conf-override", action="append", metavar="'KEY = VALUE'", help="TEST ONLY: an extra user.conf line in submission mode; the export flags the run")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from packager.harness.evaluate import run

    try:
        data = load_config_file(args.config) if args.config else {}
        ids = None
        if args.ids:
            ids = [line.strip() for line in args.ids.read_text(encoding="utf-8").splitlines() if line.strip()]
        from packager.runconfig import from_json

        knobs = from_json(args.run_config) if args.run_config else None
        cfg = build_config(
            data,
            model_path=args.model,
            dataset_dir=args.dataset,
            out_dir=args.out,
            cache_dir=args.cache or default_cache_dir(),
            backend=args.backend,
            stage=args.stage,
            samples=args.samples,
            ids=ids,
            batch_sizes=args.batch_sizes,
            scenarios=args.scenarios,
            warmup=args.warmup,
            threads=args.threads,
            min_duration_s=args.min_duration_s,
            single_stream_queries=args.single_stream_queries,
            multistream_queries=args.multistream_queries,
            offline_min_samples=args.offline_min_samples,
            performance_samples=args.performance_samples,
            driver=args.driver,
            resume=args.resume or None,
            reference_outputs=args.reference_outputs,
            atol=args.atol,
            save_outputs=args.save_outputs or None,
            image_digest=args.image_digest,
            platform=args.platform,
            power_probe=args.power_probe,
            workers=args.workers,
            mode=args.mode,
            execution=args.execution,
            performance_skipped=args.performance_skipped,
            user_conf_overrides=args.user_conf_override,
            run_config=knobs,
        )
        given = {k: v for k, v in (("labels", args.labels), ("images", args.images), ("synsets", args.synsets)) if v}
        hint = dataclasses.replace(cfg.dataset, **given)
        layout = args.layout or (hint.layout if given else None)  # file names given mean the layout is, too
        cfg = dataclasses.replace(cfg, dataset=resolve(hint.root, hint, layout))
        result = run(cfg)
    except RequestPackError as e:
        logging.getLogger("packager.harness").error("%s", e)
        return e.return_code
    m = result.metrics
    summary = f"top-1 {m.accuracy.top1:.4f} top-5 {m.accuracy.top5:.4f} ({m.accuracy.samples} samples)"
    if m.latency:
        summary += f", SingleStream p50 {m.latency.p50_s * 1e3:.2f} ms"
    if m.multistream:
        ms = m.multistream
        summary += f", MultiStream p99 {ms.p99_s * 1e3:.2f} ms per query of {ms.samples_per_query}"
    for t in m.throughput:
        summary += f", Offline b{t.batch_size} {t.images_per_s:.1f} img/s"
    sys.stdout.write(f"{summary}; outputs in {result.out_dir}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
