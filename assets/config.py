"""Run config of every stage, declared once: a ``dg.Config`` is derived from the stage's settings
model in ml/ (``ml/settings.py``, ``ml/train/config.py``) with ``dagster_config``, so a field, its
default and its description live in one place and the validators stay on the ml/ model.

``SplitConfig`` carries the document split (``seed``, ``val_ratio``, ``test_ratio``) every corpus
and dataset stage shares: declared once (``ml.settings.SplitRules``), and checked equal across
stages before any step runs (``ml.settings.validate_profile``).
"""

from typing import Any, Iterable

import dagster as dg
from pydantic import BaseModel, Field, create_model

from ml.settings import RelationTriplesRules, SplitRules


def dagster_config(model: type[BaseModel], name: str, default: BaseModel | None = None,
                   only: Iterable[str] | None = None, base: type[dg.Config] = dg.Config) -> type[dg.Config]:
    """A dg.Config class with the same fields, defaults and descriptions as a pydantic settings model
    (``only``: just these fields; ``base``: a dg.Config to extend). The rules (validators) stay on the
    ml/ model: assets convert back with ``settings()``."""
    default = default if default is not None else model()
    fields: dict[str, Any] = {}
    for key, f in model.model_fields.items():
        if only is not None and key not in only:
            continue
        value = getattr(default, key)
        if isinstance(value, BaseModel):
            sub = dagster_config(type(value), f"{name}_{key}", value)
            fields[key] = (sub, Field(default_factory=lambda sub=sub, v=value: sub(**v.model_dump()),
                                      description=f.description))
        elif isinstance(value, (dict, list)):
            fields[key] = (f.annotation, Field(default_factory=lambda v=value: type(v)(v), description=f.description))
        else:
            fields[key] = (f.annotation, Field(default=value, description=f.description))
    return create_model(name, __base__=base, __doc__=model.__doc__, **fields)


SplitConfig = dagster_config(SplitRules, "SplitConfig", only=("seed", "val_ratio", "test_ratio"))
"""The document split shared by tokenizer, tokenized_corpus and every dataset."""
MixedSplitConfig = dagster_config(SplitRules, "MixedSplitConfig", only=("mix_weights",), base=SplitConfig)
"""The split plus ``mix_weights`` (source -> weight of the train split), for the stages that mix sources."""
RelationTriplesConfig = dagster_config(RelationTriplesRules, "RelationTriplesConfig")
