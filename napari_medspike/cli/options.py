"""Command-line options generated from a configuration dataclass: each field's name, type,
default and help (``metadata["help"]``) are declared once, on the dataclass."""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from typing import Any


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {text[:80]!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object such as '{{\"timesteps\": 2}}', got {text[:80]!r}")
    return value


def _int_list(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1,2,3, got {text!r}") from None


def add_config_options(parser: argparse.ArgumentParser, cls: type, choices: dict[str, list[str]] | None = None) -> None:
    """Add one option per field of the dataclass ``cls`` whose metadata does not say ``cli=False``.

    Types map as: ``bool`` -> a switch (``--no-NAME`` when the default is True), ``dict`` -> a
    JSON object, ``list[int]`` -> comma-separated integers, ``list[str]`` -> one or more values,
    ``int``/``float``/``str`` (optionally ``| None``) -> that type. Required fields (no default)
    are required options."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True):
            continue
        hint, default, required = hints[f.name], _default(f), f.default is dataclasses.MISSING and \
            f.default_factory is dataclasses.MISSING  # type: ignore[misc]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None -> X
            hint = next(t for t in typing.get_args(hint) if t is not type(None))
        base, origin = hint, typing.get_origin(hint) or hint
        help_text = f.metadata.get("help", "")
        kwargs: dict[str, Any] = {"dest": f.name, "metavar": _flag(f)[2:].upper().replace("-", "_")}
        if base is bool:
            flag = ("--no-" + f.name.replace("_", "-")) if default else _flag(f)
            parser.add_argument(flag, action="store_false" if default else "store_true", dest=f.name, default=default,
                                help=f"turn off: {help_text}" if default else help_text)
            continue
        if origin is dict:
            kwargs["type"] = _json_object
        elif origin is list and typing.get_args(base) == (int,):
            kwargs["type"] = _int_list
        elif origin is list:
            kwargs["nargs"] = "+"
        else:
            kwargs["type"] = base
        if f.name in (choices or {}):
            kwargs["choices"] = choices[f.name]
            del kwargs["metavar"]  # argparse lists the choices instead
        if required:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
            if default not in (None, "", [], {}):
                help_text += f" (default: {','.join(map(str, default)) if isinstance(default, list) else default})"
        parser.add_argument(_flag(f), help=help_text, **kwargs)


def config_from_options(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """An instance of the dataclass ``cls`` from parsed options (fields not on the command
    line keep their defaults unless given in ``overrides``)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
              if f.metadata.get("cli", True) and hasattr(args, f.name)}
    return cls(**{**values, **overrides})
