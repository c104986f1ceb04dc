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


def _attribute_docs(cls: type) -> dict[str, str]:
    """field -> the string literal written right under it in the class body (its description)."""
    import ast
    import inspect
    import textwrap

    try:
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    except (OSError, TypeError, SyntaxError):
        return {}
    docs = {}
    for stmt, nxt in zip(body, body[1:]):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def _config_type(hint: Any, value: Any) -> tuple[Any, Any]:
    """A Dagster-config-friendly (type, default) for a dataclass field: tuples become lists, tuples of
    (int, float) pairs become dicts keyed by the int as a string (Dagster config keys are strings)."""
    import types
    import typing

    args = typing.get_args(hint)
    optional = type(None) in args
    inner = next((a for a in args if a is not type(None)), hint) if optional else hint
    wrap = (lambda t: typing.Optional[t]) if optional else (lambda t: t)
    if typing.get_origin(inner) is tuple:
        item = typing.get_args(inner)[0]
        if typing.get_origin(item) is tuple:  # ((n, x), ...) -> {"n": x}
            key, val = typing.get_args(item)
            return wrap(dict[str, val]), (None if value is None else {str(k): v for k, v in value})
        return wrap(list[item]), (None if value is None else list(value))
    if isinstance(inner, types.UnionType) or typing.get_origin(inner) is typing.Union:
        return hint, value
    return wrap(inner), value


def dagster_config_from_dataclass(cls: type, name: str, only: Iterable[str] | None = None,
                                  base: type[BaseModel] = dg.Config, doc: str | None = None,
                                  descriptions: dict[str, str] | None = None) -> type[BaseModel]:
    """``dagster_config`` for an ml/ stage config that is a dataclass: the same fields, defaults (of
    ``cls()``) and descriptions (the docstring under each field); tuples become lists and (int, float)
    pairs a dict keyed by the int (``descriptions`` adds ones the dataclass lacks). The asset converts
    back (``to_ml``)."""
    import dataclasses
    import typing

    default = cls()
    hints = typing.get_type_hints(cls)
    docs = {**_attribute_docs(cls), **(descriptions or {})}
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if only is not None and f.name not in only:
            continue
        annotation, value = _config_type(hints[f.name], getattr(default, f.name))
        factory = (lambda v=value: type(v)(v)) if isinstance(value, (dict, list)) else None
        fields[f.name] = (annotation, Field(default_factory=factory, description=docs.get(f.name)) if factory
                          else Field(default=value, description=docs.get(f.name)))
    return create_model(name, __base__=base, __doc__=doc or cls.__doc__, **fields)


def dataclass_from_config(cls: type, config: BaseModel):
    """The ml/ dataclass back from a config made by ``dagster_config_from_dataclass`` (lists become
    tuples, a dict of pairs becomes its sorted pairs); dataclass fields the config lacks keep their default."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    given = type(config).model_fields
    return cls(**{f.name: _from_config_value(hints[f.name], getattr(config, f.name))
                  for f in dataclasses.fields(cls) if f.name in given})


def _from_config_value(hint: Any, value: Any) -> Any:
    """``_config_type`` backwards: a config value as the dataclass field holds it."""
    import typing

    args = typing.get_args(hint)
    inner = next((a for a in args if a is not type(None)), hint) if type(None) in args else hint
    if value is None or typing.get_origin(inner) is not tuple:
        return value
    item = typing.get_args(inner)[0]
    if typing.get_origin(item) is tuple:  # {"n": x} -> ((n, x), ...)
        key = typing.get_args(item)[0]
        return tuple(sorted((key(k), v) for k, v in value.items()))
    return tuple(value)
