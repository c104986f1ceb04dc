"""``dagster_config``: a Dagster config class (dg.Config or a ConfigurableResource) derived from a
pydantic settings model in ml/, so each field is declared once (ml/ keeps the validators)."""

from typing import Any, Iterable

import dagster as dg
from pydantic import BaseModel, Field, create_model


def dagster_config(model: type[BaseModel], name: str, default: BaseModel | None = None,
                   only: Iterable[str] | None = None, base: type[BaseModel] = dg.Config) -> type[BaseModel]:
    """A dg.Config class with the same fields, defaults and descriptions as a pydantic settings model
    (``only``: just these fields; ``base``: a dg.Config to extend, or dg.ConfigurableResource). The rules (validators) stay on the
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
