"""ONNX bundles: the one export path shared by every model.

    export.py    load a standard HF directory, wrap it (per kind), export to ONNX, torch references
    quantize.py  INT8 dynamic quantization (pre-processing, per-tensor / per-channel)
    parity.py    ORT sessions, parity metrics and thresholds, latency (no torch: ``lineage verify`` uses it)
    sources.py   checkpoint versions in the store -> model sources, sample texts, lineage walk
    bundle.py    build a bundle (models, parity.json, manifest.json, bundle.tar.gz), safe extraction, verify
    promote.py   promotion of a bundle component, refused when a blocking check failed
    cli.py       ``lineage verify``, ``lineage promote``, ``lineage promoted``

Nothing here imports dagster; torch and transformers are imported only where a model is exported.
"""
