"""ONNX bundles: the one export path shared by every model (no dagster; torch only where a model is exported).

Which module does what: DESIGN.md, "Module notes" (to_onnx, quantize/int4, parity, sources, bundle,
build, tarball/verify, gates, promote, cli).
"""
