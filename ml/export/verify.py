"""``lineage verify``: a bundle tarball extracted safely, every sha256 checked against its manifest,
onnx.checker run and the parity samples re-run in ONNX Runtime. No torch."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ml.export import parity
from ml.export.bundle import FORMAT, MANIFEST, PARITY, BundleError, UnsafeBundleError
from ml.export.tarball import check_member_name, safe_extract
from ml.fsutil import sha256_file


@dataclass
class VerifyReport:
    checks: list[tuple[bool, str]] = field(default_factory=list)

    def add(self, ok: bool, message: str) -> bool:
        self.checks.append((bool(ok), message))
        return ok

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(ok for ok, _ in self.checks)

    def render(self) -> str:
        return "\n".join(f"{'ok  ' if ok else 'FAIL'} {msg}" for ok, msg in self.checks)


def verify_bundle(tar_path: Path, threads: int = 0, keep: Path | None = None) -> VerifyReport:
    """Safe extraction, every sha256, onnx.checker, and the parity samples re-run in ORT."""
    report = VerifyReport()
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        dest = Path(keep) if keep else Path(tmp) / "bundle"
        if keep and dest.exists() and any(dest.iterdir()):
            report.add(False, f"--keep directory {dest} is not empty")
            return report
        try:
            members = safe_extract(tar_path, dest)
        except BundleError as exc:
            report.add(False, f"extraction refused: {exc}")
            return report
        report.add(True, f"extracted {len(members)} regular files safely")
        _verify_tree(dest, members, report, threads)
    return report


def _verify_tree(root: Path, members: list[str], report: VerifyReport, threads: int) -> None:
    import onnx

    if MANIFEST not in members:
        report.add(False, f"no {MANIFEST} in the bundle")
        return
    try:
        manifest = json.loads((root / MANIFEST).read_text("utf-8"))
        listed = {f["path"]: f for f in manifest["files"]}
        models = manifest["models"]
    except (ValueError, KeyError, TypeError) as exc:
        report.add(False, f"{MANIFEST} is unreadable: {exc}")
        return
    if manifest.get("format") != FORMAT:
        report.add(False, f"unknown bundle format {manifest.get('format')!r} (expected {FORMAT})")
    bad = 0
    for rel, f in sorted(listed.items()):
        try:
            check_member_name(rel)
        except UnsafeBundleError as exc:
            bad += not report.add(False, f"manifest lists an unsafe path: {exc}")
            continue
        path = root / rel
        if not path.is_file():
            bad += not report.add(False, f"{rel}: listed in the manifest but missing")
        elif path.stat().st_size != f["bytes"] or sha256_file(path) != f["sha256"]:
            bad += not report.add(False, f"{rel}: sha256/size differs from the manifest (tampered or corrupt)")
    for rel in sorted(set(members) - set(listed) - {MANIFEST}):
        bad += not report.add(False, f"{rel}: in the archive but not in the manifest")
    report.add(bad == 0, f"sha256 of {len(listed)} files" + ("" if bad == 0 else f": {bad} problem(s)"))
    if bad:
        return  # never load files that are not the ones the manifest describes

    try:
        thresholds = parity.Thresholds.from_dict(json.loads((root / PARITY).read_text("utf-8"))["thresholds"])
    except (OSError, ValueError, KeyError) as exc:
        report.add(False, f"{PARITY} is unreadable: {exc}")
        return
    for name, m in sorted(models.items()):
        files = {k: v for k, v in m.get("files", {}).items() if k in ("samples", *parity.PRECISIONS)}
        stray = [v for v in files.values() if v not in listed]
        if stray or "samples" not in files or "fp32" not in files:
            report.add(False, f"{name}: model files {stray or sorted(files)} are not (all) listed bundle files")
            continue
        try:
            samples = parity.load_samples(root / files["samples"])
        except (OSError, ValueError, KeyError) as exc:
            report.add(False, f"{name}: samples unreadable: {exc}")
            continue
        for prec in parity.PRECISIONS:
            rel = files.get(prec)
            if rel is None:
                if prec == "int8" and m.get("quantization") is not None:
                    report.add(False, f"{name}: manifest says quantized but lists no int8 file")
                continue
            try:
                proto = onnx.load(str(root / rel), load_external_data=False)
                if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
                    report.add(False, f"{name} {prec}: {rel} refers to external data files (not allowed in a bundle)")
                    continue
                onnx.checker.check_model(proto)
                res = parity.check_onnx(root / rel, m["kind"], prec, samples, thresholds, threads)
            except Exception as exc:  # onnx / ORT raise many types; any of them fails verification
                report.add(False, f"{name} {prec}: cannot load or run {rel} in ONNX Runtime: {exc}")
                continue
            figures = ", ".join(f"{c['metric']}={c['value']:.6g} ({c['op']} {c['threshold']:g})"
                                for c in res["criteria"] if c["value"] is not None)
            report.add(res["passed"], f"{name} {prec}: parity on {res['samples']} stored samples: "
                       + (figures or "; ".join(res["problems"])))
