"""Experiment tracking with MLflow: each training and evaluation materialization that builds a version logs one run.

Tracking never fails a materialization: an unreachable tracker is one warning and a ``failed`` status in
the metadata. Where runs go, what is logged and the variables: DESIGN.md, "Module notes".
"""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from ml.fsutil import scoped_environ

DEFAULT_EXPERIMENT = "lineage-forge"


def tracking_home(home: Path | str) -> Path:
    """``<home>/mlflow``; for an ``s3://`` home (no local part) a store in this machine's scratch space:
    set MLFLOW_TRACKING_URI to a tracking server to share runs across workers."""
    from ml.storage import home_scratch, is_url

    if is_url(home):
        return home_scratch(home, "mlflow")
    return Path(home) / "mlflow"


def tracking_uri(home: Path | str) -> str:
    """MLFLOW_TRACKING_URI, else the local SQLite store under ``home`` (LINEAGE_HOME)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{tracking_home(home) / 'mlflow.db'}"


def enabled() -> bool:
    return os.environ.get("LINEAGE_TRACKING", "on").strip().lower() not in ("off", "0", "false", "no")


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as ``a.b -> str(value)`` (MLflow params are strings, at most 6000 chars)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = (json.dumps(v, sort_keys=True) if isinstance(v, (list, tuple, dict)) else str(v))[:6000]
    return out


@contextmanager
def _client_env(uri: str) -> Iterator[None]:
    """No retries and a short timeout for an HTTP tracker (MLflow's default retries for minutes)."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": os.environ.get("LINEAGE_TRACKING_TIMEOUT", "5")}
    with scoped_environ(keys if uri.startswith(("http://", "https://")) else {}):
        yield


def _experiment_id(client, name: str, artifacts: Path | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    kw = {"artifact_location": artifacts.as_uri()} if artifacts is not None else {}
    try:
        return client.create_experiment(name, **kw)
    except Exception:  # created meanwhile by another process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def metric_rows(rows: Iterable[Mapping[str, Any]]) -> list[tuple[str, float, int]]:
    """(key, value, step) of ``{step, split, metric, value}`` rows; non-finite values are left out
    (MLflow rejects NaN on some backends) and counted by the caller."""
    out = []
    for r in rows:
        v = float(r["value"])
        if math.isfinite(v):
            out.append((f"{r['split']}/{r['metric']}", v, int(r.get("step") or 0)))
    return out


def log_run(home: Path | str, *, run_name: str, tags: Mapping[str, Any], params: Mapping[str, Any],
            metrics: Iterable[tuple[str, float, int]], artifacts: Iterable[Path] = (),
            experiment: str | None = None, uri: str | None = None) -> dict[str, Any]:
    """Log one finished run; returns what the metadata shows: status logged | off | failed, uri, run id."""
    uri = uri or tracking_uri(home)
    if not enabled():
        return {"status": "off", "uri": uri}
    experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    try:
        with _client_env(uri):
            from mlflow import MlflowClient
            from mlflow.entities import Metric, Param, RunTag

            local = uri.startswith("sqlite:///") and uri == f"sqlite:///{tracking_home(home) / 'mlflow.db'}"
            if local:
                tracking_home(home).mkdir(parents=True, exist_ok=True)
            client = MlflowClient(tracking_uri=uri)
            exp_id = _experiment_id(client, experiment, tracking_home(home) / "artifacts" if local else None)
            run = client.create_run(exp_id, run_name=run_name,
                                    tags={k: str(v) for k, v in tags.items() if v is not None})
            run_id = run.info.run_id
            try:
                import time

                now = int(time.time() * 1000)
                ps = [Param(k, v) for k, v in sorted(flatten(params).items())]
                ms = [Metric(k, v, now, s) for k, v, s in metrics]
                for lo in range(0, max(len(ps), 1), 100):  # MLflow's batch limits: 100 params, 1000 metrics
                    client.log_batch(run_id, params=ps[lo:lo + 100])
                for lo in range(0, len(ms), 1000):
                    client.log_batch(run_id, metrics=ms[lo:lo + 1000])
                for path in artifacts:
                    if Path(path).is_file():
                        client.log_artifact(run_id, str(path))
                client.set_terminated(run_id, "FINISHED")
            except Exception:
                client.set_terminated(run_id, "FAILED")
                raise
        return {"status": "logged", "uri": uri, "experiment": experiment, "run_id": run_id,
                "metrics": len(ms), "params": len(ps)}
    except Exception as exc:  # the tracker must never fail a materialization
        return {"status": "failed", "uri": uri, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}


def log_training(home: Path | str, version_dir: Path, *, asset: str, data_version: str, fingerprint: str,
                 code_version: str, run_id: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """A training version: params = settings, metrics = metrics.jsonl, artifacts = loss curve and summary."""
    rows = []
    mfile = Path(version_dir) / "metrics.jsonl"
    if mfile.is_file():
        rows = [json.loads(line) for line in mfile.read_text("utf-8").splitlines() if line.strip()]
    return log_run(home, run_name=f"{asset}@{data_version[:12]}",
                   tags={"asset": asset, "data_version": data_version, "fingerprint": fingerprint,
                         "code_version": code_version, "dagster_run_id": run_id, "kind": "training"},
                   params=settings, metrics=metric_rows(rows),
                   artifacts=[Path(version_dir) / "loss_curve.png", Path(version_dir) / "summary.json"])
