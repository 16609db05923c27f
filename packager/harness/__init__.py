"""The evaluation harness that runs inside every image: ``python -m packager.harness``.

It imports nothing of the package except the pure ``packager.results`` (wire
formats) and ``packager.errors`` (exit codes), so an image needs only this
directory, those two modules, numpy, Pillow, pydantic (for ``results``) and one
of onnxruntime / onnx (reference backend) / apache-tvm.

The runner's contract: pass ``--config`` with ``manifest.model_dump(mode="json")``
(or the sections preprocessing, run, model, framework, dataset, target), plus
``--model``, ``--dataset``, ``--out``, ``--cache``, ``--stage`` and
``--image-digest``; read ``predictions.jsonl``, ``metrics.json``,
``system.json`` and ``loadgen/`` from ``--out``; map exit codes 1/2/3 as
``packager.errors`` does. Library use: ``evaluate.run(config.build_config(...))``.
"""
