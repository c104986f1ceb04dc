"""One checkpoint, end to end: build the task, run the loop, write the version's files.

``run_training(spec)`` runs the same in the Dagster step and under ``torchrun`` (every rank); rank 0
writes into ``spec.out_dir``. The files: ml/FORMATS.md, "Checkpoints", and DESIGN.md, "Module notes".
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from ml.fsutil import atomic_write_json
from ml.train.config import SETTINGS, DeviceSettings


class TrainSpec(BaseModel):
    """Everything a training process needs (written as JSON for torchrun workers)."""

    model_config = ConfigDict(extra="forbid")
    asset: str
    settings: dict[str, Any]
    inputs: dict[str, str] = Field(description="upstream name -> version directory")
    out_dir: str
    work_dir: str | None = None
    device: DeviceSettings = Field(default_factory=DeviceSettings)
    resume_from: dict[str, Any] | None = Field(None, description="train.resume_from resolved (CheckpointRef.as_dict)")
    init_from: dict[str, Any] | None = Field(None, description="train.init_from resolved (CheckpointRef.as_dict)")

    def resolved_refs(self) -> dict[str, dict[str, Any]]:
        """train.resume_from / train.init_from as verified step checkpoints (resolved here when the caller
        did not: a path, or ASSET@VERSION / latest / best in the store at $LINEAGE_HOME)."""
        from ml.train import checkpointing as ckpt

        settings = self.typed_settings().train
        out = {}
        for key in ("resume_from", "init_from"):
            given, ref = getattr(self, key), getattr(settings, key)
            if given is None and ref:
                from ml.paths import lineage_home
                from ml.store import ArtifactStore

                given = ckpt.resolve_ref(ref, asset=self.asset, store=ArtifactStore(lineage_home())).as_dict()
            if given is not None:
                out[key] = given
        return out

    def typed_settings(self):
        if self.asset not in SETTINGS:
            raise ValueError(f"unknown checkpoint asset {self.asset!r}; known: {sorted(SETTINGS)}")
        return SETTINGS[self.asset].model_validate(self.settings)


def write_outputs(out: Path, asset: str, metrics: list[dict[str, Any]], summary: dict[str, Any],
                  headline: str) -> None:
    """metrics.jsonl, loss_curve.png (with the ``headline`` validation metric) and summary.json."""
    from ml.train.plots import write_loss_curve

    with open(out / "metrics.jsonl", "w", encoding="utf-8") as f:
        for row in metrics:
            f.write(json.dumps(row, sort_keys=True) + "\n")
    write_loss_curve(out / "loss_curve.png", metrics, title=asset, headline=headline)
    atomic_write_json(out / "summary.json", summary)


RUN_FACTS_DIR = "_run"  # the run record beside the content (ml/run_record.py RUN_DIR; outside the data version)
STEP_FACTS = "train_steps.jsonl"
TRAIN_RUN = "train_run.json"  # the summary's run facts: the same inputs would not give them again
RUN_FACT_KEYS = ("resumed_from_step", "train_seconds_this_run", "tokens_this_run", "samples_this_run",
                 "tokens_per_s", "samples_per_s", "peak_memory_mb")


def split_run_facts(summary: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(content: summary.json, run facts: ``_run/train_run.json``) of the loop's summary."""
    return ({k: v for k, v in summary.items() if k not in RUN_FACT_KEYS},
            {k: summary[k] for k in RUN_FACT_KEYS if k in summary})


def read_summary(version_dir: Path) -> dict[str, Any]:
    """summary.json with the run's facts (``_run/train_run.json``) merged back in."""
    from ml.run_record import read_json

    summary = json.loads((Path(version_dir) / "summary.json").read_text("utf-8"))
    return {**summary, **(read_json(version_dir, TRAIN_RUN) or {})}


def write_step_facts(out: Path, rows: list[dict[str, Any]]) -> Path:
    """The loop's per-step run facts (throughput, eval peak memory) as ``<out>/_run/train_steps.jsonl``."""
    d = Path(out) / RUN_FACTS_DIR
    d.mkdir(parents=True, exist_ok=True)
    path = d / STEP_FACTS
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def run_training(spec: TrainSpec, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train and (on rank 0) write the version files; returns the summary."""
    from ml.train import ddp, device as devmod, tasks
    from ml.train.loop import train

    log = log or (lambda msg: print(msg, flush=True))
    settings = spec.typed_settings()
    env = ddp.env()
    rt = devmod.resolve(spec.device, env.local_rank, env.world_size, rank=env.rank)
    ddp.init(rt.device.type)
    try:
        devmod.seed_everything(spec.device.seed)  # identical initial weights on every rank
        built = tasks.BUILDERS[spec.asset](settings, spec.inputs)
        work = Path(spec.work_dir) if spec.work_dir else None
        if work is not None and env.is_main:
            work.mkdir(parents=True, exist_ok=True)
        ddp.barrier()
        refs = spec.resolved_refs()
        result = train(built.task, settings.train, rt, work, log,
                       resume_from=Path(refs["resume_from"]["path"]) if "resume_from" in refs else None,
                       init_from=Path(refs["init_from"]["path"]) if "init_from" in refs else None)
        summary = {**result.summary, "asset": spec.asset, "data": built.data, **refs}
        if env.is_main:
            out = Path(spec.out_dir)
            out.mkdir(parents=True, exist_ok=True)
            built.save(out)
            content, facts = split_run_facts(summary)
            write_outputs(out, spec.asset, result.metrics, content, headline=built.task.best_metric)
            write_step_facts(out, result.step_facts)
            atomic_write_json(Path(out) / RUN_FACTS_DIR / TRAIN_RUN, facts)
        ddp.barrier()
        return summary
    finally:
        ddp.shutdown()


def launch(spec: TrainSpec, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run ``spec`` in this process, or under torchrun when train.nproc_per_node > 1 (standalone, one node)
    or train.nnodes > 1 (this machine is node train.node_rank; each node calls ``launch`` with its own
    node_rank and the same spec otherwise; node 0 returns the summary, the others their place).

    The workers' output is streamed to ``log``; a failed worker raises with the tail of the output."""
    import collections
    import subprocess

    log = log or (lambda msg: print(msg, flush=True))
    train = spec.typed_settings().train
    n, nodes = train.nproc_per_node, train.nnodes
    if n == 1 and nodes == 1:
        return run_training(spec, log)
    if not spec.work_dir:
        raise ValueError("torchrun training needs a work_dir for its spec file")
    spec_path = Path(spec.work_dir) / "spec.json"
    atomic_write_json(spec_path, json.loads(spec.model_dump_json()))
    if nodes == 1:
        where = ["--standalone"]
    else:  # static rendezvous: node 0 hosts the store at rdzv_endpoint, ranks follow node_rank
        where = [f"--nnodes={nodes}", f"--node_rank={train.node_rank}", "--rdzv_backend=static",
                 f"--rdzv_endpoint={train.rdzv_endpoint}"]
        host, _, port = train.rdzv_endpoint.rpartition(":")
        where += [f"--master_addr={host}", f"--master_port={port}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", *where, f"--nproc_per_node={n}",
           "-m", "ml.train", str(spec_path)]
    log(f"launching {n} processes" + (f" (node {train.node_rank} of {nodes})" if nodes > 1 else "")
        + f": {' '.join(cmd)}")
    tail: collections.deque[str] = collections.deque(maxlen=40)
    errors: list[str] = []  # the workers' exception lines, which torchrun's own report buries
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          cwd=str(Path(__file__).resolve().parents[2])) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            if re.match(r"^(\[[^\]]*\]: )?[\w.]*(Error|Exception)\b.*:", line) and line not in errors:
                errors.append(line)
            if line.startswith("[") or line in errors:
                log(line)
        rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"torchrun with {n} processes failed (exit {rc}): " + " | ".join(errors[:4])
                           + "\n--- last output ---\n" + "\n".join(tail))
    if train.node_rank != 0:  # node 0 wrote the outputs (on its machine)
        return {"node_rank": train.node_rank, "nnodes": nodes, "world_size": nodes * n}
    return read_summary(Path(spec.out_dir))


def main(argv: list[str] | None = None) -> int:
    """``python -m ml.train SPEC.json`` (what torchrun starts on every rank)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m ml.train SPEC.json   (or: torchrun --nproc_per_node N -m ml.train SPEC.json)",
              file=sys.stderr)
        return 2
    spec = TrainSpec.model_validate_json(Path(argv[0]).read_text("utf-8"))
    rank = int(os.environ.get("RANK", 0))
    summary = run_training(spec, log=(lambda m: print(m, flush=True)) if rank == 0 else (lambda m: None))
    if rank == 0:
        print(json.dumps({"summary": {k: summary[k] for k in ("steps", "final_train_loss", "val", "tokens_per_s")}}),
              flush=True)
    return 0
