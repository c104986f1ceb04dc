"""Stand-in assets under the contract's keys, groups and pools, for the sensor and job tests: they go
through materialize_versioned like the real assets (store manifests with ``upstream``, catalog rows),
so a sensor sees what it sees in production; only their bodies are trivial."""

import json
from pathlib import Path
from typing import Callable

import dagster as dg

from assets.versioned import materialize_versioned, upstream_version
from jobs import ALL_JOBS
from ml.store import BuildResult
from resources import ArtifactStoreResource, CatalogResource, LandingZone
from sensors import retrain_sensor

RESOURCES = {"store": ArtifactStoreResource(), "catalog": CatalogResource(), "landing": LandingZone()}


class Text(dg.Config):
    text: str = "base"


def _stand_in(name: str, group: str, deps: list[str], pool: str | None = None):
    @dg.asset(name=name, group_name=group, deps=deps, pool=pool, code_version="1")
    def _asset(context: dg.AssetExecutionContext, config: Text, store: ArtifactStoreResource,
               catalog: CatalogResource) -> dg.MaterializeResult:
        st = store.get()
        ups = {d: upstream_version(context, st, d).data_version for d in deps}

        def build(out: Path) -> BuildResult:
            (out / "content.json").write_text(json.dumps({"text": config.text, "upstream": ups}, sort_keys=True))
            return BuildResult()

        return materialize_versioned(context, store=st, catalog=catalog.get(), config=config.model_dump(),
                                     upstream=ups, build=build)
    return _asset


def publishing_stand_in(name: str, deps: list[str], write: Callable[[Path, dict[str, str]], None]):
    """A stand-in (group ``stand_in``) whose version holds what ``write(out, upstream versions)`` puts there,
    with the real upstream versions of ``deps``: for the tests of assets that read prepared checkpoints."""

    @dg.asset(name=name, deps=deps, group_name="stand_in")
    def _asset(context: dg.AssetExecutionContext, store: ArtifactStoreResource, catalog: CatalogResource):
        st = store.get()
        up = {d: upstream_version(context, st, d).data_version for d in deps}

        def build(out: Path) -> BuildResult:
            write(out, up)
            return BuildResult(rows=1)

        return materialize_versioned(context, store=st, catalog=catalog.get(), config={"stand_in": name},
                                     upstream=up, build=build)

    return _asset


STAND_INS = [
    _stand_in("tokenizer", "corpus", []),
    _stand_in("tokenized_corpus", "corpus", ["tokenizer"]),
    _stand_in("sft_dataset", "datasets", []),
    _stand_in("lm_checkpoint", "models", ["tokenized_corpus", "tokenizer"], pool="gpu"),
    _stand_in("lora_adapter", "models", ["lm_checkpoint", "sft_dataset"], pool="gpu"),
    _stand_in("model_evaluation", "evaluation", ["lm_checkpoint", "lora_adapter"], pool="gpu"),
    _stand_in("onnx_bundle", "export", ["lm_checkpoint", "lora_adapter", "model_evaluation"], pool="gpu"),
]
DEFS = dg.Definitions(assets=STAND_INS, jobs=ALL_JOBS, sensors=[retrain_sensor], resources=RESOURCES)
