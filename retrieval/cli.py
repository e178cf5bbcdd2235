"""Command lines from config dataclasses: one ``--flag`` per field, its docstring as the help text.

Fields are documented CleanRL style, with a string literal right under each field; this reads
those strings from the class source so the help never drifts from the code. Every entry point
uses :func:`parse_config`: the trainers, the benches, the small tools and the app (which also reads
environment variables and validates the result); positional arguments are fields marked
:data:`POSITIONAL`.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import os
import re
import textwrap
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes"), ("0", "false", "no", "")
POSITIONAL = {"positional": True}
"""Field metadata for an argument given by position (``path: Path = field(default=..., metadata=POSITIONAL)``):
required when the field's default is ``None`` or an empty tuple, else optional."""


def field_docs(cls: type) -> dict[str, str]:
    """``{field name: docstring}`` of a dataclass whose fields are followed by string literals.

    Fields inherited from dataclass bases keep their docstrings; a subclass's own docstring wins. A
    field made by code (``dataclasses.make_dataclass``) has no source: its ``metadata["help"]`` is its doc.
    """
    docs = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs |= _own_field_docs(klass)
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    own = cls.__dict__.get("__dataclass_fields__", {})
    docs = {name: f.metadata["help"] for name, f in own.items() if "help" in f.metadata}
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # a class made by code
        return docs
    tree = ast.parse(textwrap.dedent(source))
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, following in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):  # a hint that names something only imported for type checkers
        return {}


def literal_choices(cls: type) -> dict[str, tuple[Any, ...]]:
    """``{field name: allowed values}`` for the fields annotated ``typing.Literal[...]``."""
    hints = _type_hints(cls)
    return {name: typing.get_args(hint) for name, hint in hints.items() if typing.get_origin(hint) is typing.Literal}


def _optional_type(hint: Any) -> type | None:
    """``X`` for a hint ``X | None`` where X is a plain class (``Path``, ``int``, ...), else None."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) == 1 and isinstance(args[0], type) and type(None) in typing.get_args(hint):
        return args[0]
    return None


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in each flag's help; the description (usually a module docstring) shown as written."""


def _from_env(text: str, default: Any, name: str) -> Any:
    """An environment variable's text as a value of the field's type (``default`` gives the type)."""
    if isinstance(default, bool):
        word = text.strip().lower()
        if word not in TRUE_WORDS + FALSE_WORDS:
            raise ValueError(
                f"{name}={text!r} is not a yes/no value (use one of {', '.join(TRUE_WORDS)} or 0/false/no)"
            )
        return word in TRUE_WORDS
    try:
        if isinstance(default, tuple):
            kind = type(default[0]) if default else str
            return tuple(kind(part) for part in re.split(r"[,\s]+", text.strip()) if part)
        return text if default is None else type(default)(text)
    except ValueError as exc:
        raise ValueError(f"{name}={text!r}: {exc}") from exc


def _add_field(
    parser: argparse.ArgumentParser, f: dataclasses.Field, help_text: str, choices: tuple | None, hint: Any
) -> None:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    kwargs: dict[str, Any] = {"default": default, "help": help_text.replace("%", "%%")}  # argparse formats help with %
    positional = f.metadata.get("positional", False)
    if isinstance(default, bool):
        kwargs["action"] = argparse.BooleanOptionalAction
    elif isinstance(default, tuple):
        item_types = [a for a in typing.get_args(hint) if a is not Ellipsis]
        kind = type(default[0]) if default else (item_types[0] if item_types else str)
        kwargs.update(nargs=("*" if default else "+") if positional else "*", type=kind)
    elif default is not None:
        kwargs["type"] = type(default)
        kwargs["nargs"] = "?" if positional else None
    else:
        kwargs["type"] = _optional_type(hint) or str
    if choices:
        kwargs["choices"] = choices
    if positional:
        if default is None:
            del kwargs["default"]  # required
        parser.add_argument(f.name, **kwargs)
    else:
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **kwargs)


def parse_config(
    cls: type[T],
    argv: list[str] | None = None,
    description: str | None = None,
    *,
    env_prefix: str | None = None,
    validate: Callable[[T], None] | None = None,
) -> T:
    """Parse ``argv`` into ``cls`` (a dataclass with defaults for every field).

    Args:
        cls: the config dataclass; a field annotated ``Literal[...]`` accepts only those values.
        argv: the arguments (``None``: ``sys.argv[1:]``).
        description: the ``--help`` text above the flags (default: the class docstring's first line).
        env_prefix: when given, field ``x_y`` also reads the variable ``<prefix>X_Y``; a flag beats
            the variable, which beats the default. Booleans read 1/true/yes (0/false/no/empty: off).
        validate: called with the parsed config; a ``ValueError`` it raises becomes a usage error
            (``parser.error``: the message and exit status 2).
    """
    parser = argparse.ArgumentParser(
        description=description or (cls.__doc__ or "").strip().splitlines()[0], formatter_class=_HelpFormatter
    )
    docs, choices, hints = field_docs(cls), literal_choices(cls), _type_hints(cls)
    env: dict[str, str] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        help_text = docs.get(f.name, " ")
        if env_prefix is not None:
            env[f.name] = env_prefix + f.name.upper()
            help_text += f" (env {env[f.name]})"
        _add_field(parser, f, help_text, choices.get(f.name), hints.get(f.name))
    for name, variable in env.items():  # the environment replaces the defaults, so flags still win
        if variable in os.environ:
            try:
                value = _from_env(os.environ[variable], parser.get_default(name), variable)
            except ValueError as exc:
                parser.error(str(exc))
            if name in choices and value not in choices[name]:
                parser.error(f"{variable}={value!r}: choose from {', '.join(map(str, choices[name]))}")
            parser.set_defaults(**{name: value})
    values = vars(parser.parse_args(argv))
    try:  # a config's own checks (__post_init__) are usage errors too
        config = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    except ValueError as exc:
        parser.error(str(exc))
    if validate is not None:
        try:
            validate(config)
        except ValueError as exc:
            parser.error(str(exc))
    return config


def config_from_mapping(cls: type[T], values: Mapping[str, Any], where: str = "config") -> T:
    """``cls`` from ``{field name: value}`` (e.g. the ``args`` of a Ray Serve config file), each value
    checked against its field's default type; text is read as :func:`parse_config` reads environment
    variables. Unset fields keep their defaults.

    Raises:
        ValueError: an unknown field (the known ones listed), or a value of the wrong type, naming ``where``.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    choices, parsed = literal_choices(cls), {}
    for name, value in values.items():
        f = fields[name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        label = f"{where}: {name}"
        if isinstance(value, str):
            value = _from_env(value, default, label)
        elif isinstance(default, bool) or isinstance(value, bool):
            if type(value) is not type(default):
                raise ValueError(f"{label}={value!r}: expected {type(default).__name__}")
        elif isinstance(default, float) and isinstance(value, int):
            value = float(value)
        elif isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        elif default is not None and not isinstance(value, type(default)):
            raise ValueError(f"{label}={value!r}: expected {type(default).__name__}")
        if name in choices and value not in choices[name]:
            raise ValueError(f"{label}={value!r}: choose from {', '.join(map(str, choices[name]))}")
        parsed[name] = value
    return cls(**parsed)
