"""ONNX bundles: the one export path shared by every model.

    to_onnx.py   load a standard HF directory, wrap it (per kind), export to ONNX, torch references
    quantize.py  INT8 dynamic quantization (pre-processing, per-tensor / per-channel); int4.py: int4 weight-only
    parity.py    ORT sessions, parity metrics and thresholds (no torch: ``lineage verify`` uses it)
    sources.py   checkpoint versions in the store -> model sources, sample texts, lineage walk
    bundle.py    what a bundle is: layout, file names, errors, reading a stored one
    build.py     build a bundle (models, parity.json, manifest.json, bundle.tar.gz); latency.py: its run facts
    tarball.py   the deterministic .tar.gz and its safe extraction; verify.py: ``lineage verify``
    gates.py     the bundle's blocking checks and the refusal of failed checkpoints; summary.py: overview rows
    promote.py   promotion of a bundle component, refused when a blocking check failed
    cli.py       ``lineage verify``, ``lineage promote``, ``lineage promoted``

Nothing here imports dagster; torch and transformers are imported only where a model is exported.
"""
