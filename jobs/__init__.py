"""Asset-selection jobs, by asset group, so new assets of a group join their job.

Each job includes the asset checks of its assets. Jobs, groups and pools: DESIGN.md, "The asset graph"
and "Module notes".
"""

from typing import Any, Collection, Mapping

import dagster as dg

from assets import ALL_ASSETS
from ml.settings import validate_profile

INGEST_GROUPS = ("data", "corpus", "datasets")
TRAIN_GROUPS = ("models",)
EXPORT_GROUPS = ("evaluation", "export")  # the bundle carries its models' test figures, gated by no_regression

_PROFILE_SECTIONS = ("ops", "resources", "execution", "loggers")


def cut_profile(profile: Mapping[str, Any], op_names: Collection[str]) -> dict[str, Any]:
    """A run-config profile for a run of ``op_names``: ``ops:`` cut to those ops (left out when
    none is left: Dagster rejects config for ops that are not in the run), empty sections
    dropped, the other sections as they are."""
    kept = {name: cfg for name, cfg in (profile.get("ops") or {}).items() if name in op_names}
    rest = {k: v for k, v in profile.items() if k != "ops" and v is not None}
    return {**rest, **({"ops": kept} if kept else {})}


class ProfileError(ValueError):
    """A run-config profile that breaks a stage's ranges or rules (ml/settings.py); one line per field."""


def checked_cut(profile: Mapping[str, Any], op_names: Collection[str]) -> dict[str, Any]:
    """``cut_profile`` after the whole profile passed ``ml.settings.validate_profile`` (every section,
    ranges and cross-field rules): a bad value fails the launch, before any step, naming its field path."""
    errors = validate_profile(dict(profile), skip_type_errors=True)  # types: Dagster's check, right after
    if errors:
        raise ProfileError(f"run config refused before any step ran ({len(errors)} error(s)):\n  "
                           + "\n  ".join(errors))
    return cut_profile(profile, op_names)


def profile_mapping(*groups: str) -> dg.ConfigMapping:
    """Let a job take a whole run-config profile (configs/debug.yaml): ``ops:`` is cut to the
    ops of this job's groups (an asset's op and its ``<asset>_quality`` check op), so one profile
    serves ``-j ingest_job``, ``-j train_job``, ``-j export_job`` and ``-j full_pipeline`` alike.
    The whole profile is validated first (``checked_cut``); each op's config is still checked
    against its typed ``dg.Config`` after the cut."""
    assets = {key.to_user_string() for a in ALL_ASSETS for key, g in a.group_names_by_key.items() if g in groups}
    op_names = assets | {f"{name}_quality" for name in assets}

    return dg.ConfigMapping(
        config_fn=lambda profile: checked_cut(profile, op_names),
        config_schema={k: dg.Field(dg.Permissive(), is_required=False) for k in _PROFILE_SECTIONS},
        receive_processed_config_values=False,
    )


ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups(*INGEST_GROUPS),
    config=profile_mapping(*INGEST_GROUPS),
    description="The landing zone to training-ready data: raw_docs, the corpus stage (cleaned_chunks, "
    "relation_triples, tokenizer, tokenized_corpus) and the datasets.",
)

train_job = dg.define_asset_job(
    "train_job",
    selection=dg.AssetSelection.groups(*TRAIN_GROUPS),
    config=profile_mapping(*TRAIN_GROUPS),
    description="Model checkpoints (group models) from the current versions of their training data.",
)

export_job = dg.define_asset_job(
    "export_job",
    selection=dg.AssetSelection.groups(*EXPORT_GROUPS),
    config=profile_mapping(*EXPORT_GROUPS),
    description="The held-out evaluation of the current checkpoints (model_evaluation, with its blocking "
    "no_regression check) and the ONNX bundle and HF release built from them (group export).",
)

EXPERIMENT_GROUPS = ("experiments",)  # sweeps: run on demand (sweep_job), never part of full_pipeline
ALL_GROUPS = tuple(sorted({g for a in ALL_ASSETS for g in a.group_names_by_key.values()} - set(EXPERIMENT_GROUPS)))

full_pipeline = dg.define_asset_job(
    "full_pipeline",
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups(*EXPERIMENT_GROUPS),
    config=profile_mapping(*ALL_GROUPS),
    description="Every asset, from the landing zone to the exported bundle and the held-out evaluation "
    "(sweeps excepted: sweep_job).",
)

sweep_job = dg.define_asset_job(
    "sweep_job",
    selection=dg.AssetSelection.groups(*EXPERIMENT_GROUPS),
    config=profile_mapping(*EXPERIMENT_GROUPS),
    description="model_sweep: one training per point of the profile's sweep (ops.model_sweep.ops.sweep_points), "
    "in parallel as the executor and the gpu pool allow, ranked into sweep_results.",
)

ALL_JOBS = [ingest_job, train_job, export_job, full_pipeline, sweep_job]
