"""The generated references: ``docs/settings.md`` from the settings models and ``docs/cli.md``
from the command tree. ``python -m routekeeper.cli.reference`` (``make docs``) rewrites both; a
test fails when either differs from what this module generates."""

from __future__ import annotations

import inspect
import json
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import typer
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo

from routekeeper.cli.main import app
from routekeeper.settings import ENV_PREFIX, Settings

# Relative to the checkout (``make docs`` runs there).
SETTINGS_DOC = Path("docs/settings.md")
CLI_DOC = Path("docs/cli.md")

# Placeholders in key paths: an item of a list, a key of a mapping.
ITEM = "<n>"
KEY = "<name>"


def _cell(text: str) -> str:
    """Text that stays in one markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _paragraphs(text: str | None) -> list[str]:
    """A docstring or help text as paragraphs, each on one line (independent of wrapping)."""
    if not text:
        return []
    text = inspect.cleandoc(text.split("\f")[0])
    text = re.sub(r":[a-z]+:`([^`]+)`", r"`\1`", text)  # reST roles: :func:`x` -> `x`
    return [" ".join(p.split()) for p in text.split("\n\n") if p.strip() and p.strip() != "\b"]


def _document(lines: list[str]) -> str:
    """Lines as one markdown file: single blank lines, one newline at the end."""
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n") + "\n"


# -- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    path: str  # the key path of the model's own key ("" at the top level)
    model: type[BaseModel]
    in_list: bool  # somewhere below a list: no environment variable per key
    tag: str = ""  # "type: sqlite" for one member of a discriminated union


def _strip_annotated(annotation: Any) -> tuple[Any, str | None]:
    """The annotation without ``Annotated``, and its union discriminator if it has one."""
    discriminator = None
    while get_origin(annotation) is Annotated:
        annotation, *extras = get_args(annotation)
        for extra in extras:
            if isinstance(extra, FieldInfo) and isinstance(extra.discriminator, str):
                discriminator = extra.discriminator
    return annotation, discriminator


def _union_members(annotation: Any) -> tuple[Any, ...] | None:
    return get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else None


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _type_name(annotation: Any, discriminator: str | None = None) -> str:
    annotation, inner = _strip_annotated(annotation)
    discriminator = discriminator or inner
    members = _union_members(annotation)
    if members is not None:
        names = [_type_name(m) for m in members if m is not type(None)]
        text = " or ".join(names)
        if discriminator:
            text = f"one of {', '.join(names)} (by `{discriminator}`)"
        return text + (" or null" if type(None) in members else "")
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in get_args(annotation))
    if origin is list:
        return f"list of {_type_name(get_args(annotation)[0])}"
    if origin is dict:
        key, value = get_args(annotation)
        return f"mapping of {_type_name(key)} to {_type_name(value)}"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "one of " + ", ".join(f"`{json.dumps(m.value)}`" for m in annotation)
    if _is_model(annotation):
        return str(annotation.__name__)
    if isinstance(annotation, type):
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            annotation.__name__, annotation.__name__.lower()
        )
    return str(annotation)


def _constraints(field: FieldInfo) -> str:
    parts = []
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            parts.append(f">= {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            parts.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Le):
            parts.append(f"<= {item.le}")
        elif isinstance(item, annotated_types.Lt):
            parts.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.MinLen):
            parts.append(f"length >= {item.min_length}")
        elif isinstance(item, annotated_types.MaxLen):
            parts.append(f"length <= {item.max_length}")
        elif isinstance(getattr(item, "pattern", None), str):
            parts.append(f"matching `{item.pattern}`")
    return ", ".join(parts)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "its keys' defaults"
    return _code(json.dumps(TypeAdapter(Any).dump_python(value, mode="json")))


def _env_var(path: str, in_list: bool) -> str:
    if in_list:
        return ""
    return _code(ENV_PREFIX + path.replace(".", "__").upper().replace(KEY.upper(), KEY))


def _nested(
    annotation: Any, path: str, in_list: bool, discriminator: str | None = None
) -> Iterator[_Table]:
    """The tables of the models a field's type holds, with the key path of each."""
    annotation, inner = _strip_annotated(annotation)
    discriminator = discriminator or inner
    members = _union_members(annotation)
    if members is not None:
        for member in members:
            member_type, _ = _strip_annotated(member)
            if discriminator and _is_model(member_type):
                tag = member_type.model_fields[discriminator].default
                yield _Table(path, member_type, in_list, f"{discriminator}: {tag}")
            else:
                yield from _nested(member, path, in_list)
        return
    origin = get_origin(annotation)
    if origin is list:
        yield from _nested(get_args(annotation)[0], f"{path}.{ITEM}", True)
    elif origin is dict:
        yield from _nested(get_args(annotation)[1], f"{path}.{KEY}", in_list)
    elif _is_model(annotation):
        yield _Table(path, annotation, in_list)


def _key(name: str, field: FieldInfo) -> str:
    return field.alias or name


def _settings_tables() -> Iterator[tuple[_Table, list[str]]]:
    """Each model once, depth first in field order, with its rows (a model met again, as in
    recursive rules, is named by its type and not repeated)."""
    pending = [_Table("", Settings, False)]
    seen: set[tuple[type[BaseModel], str]] = {(Settings, "")}
    while pending:
        table = pending.pop(0)
        rows = []
        children: list[_Table] = []
        for name, field in table.model.model_fields.items():
            path = ".".join(p for p in (table.path, _key(name, field)) if p)
            tag_key = field.discriminator if isinstance(field.discriminator, str) else None
            kind = _type_name(field.annotation, tag_key)
            constraints = _constraints(field)
            cells = [
                _code(path),
                _cell(kind + (f"; {constraints}" if constraints else "")),
                _cell(_default(field)),
                _cell(field.description or ""),
                _env_var(path, table.in_list),
            ]
            rows.append("| " + " | ".join(cells) + " |")
            for child in _nested(field.annotation, path, table.in_list, tag_key):
                if (child.model, child.tag) not in seen:
                    seen.add((child.model, child.tag))
                    children.append(child)
        yield table, rows
        pending[:0] = children


def settings_reference() -> str:
    """docs/settings.md: every key of the configuration, one table per section."""
    out = [
        "# Settings reference",
        "",
        "Generated from `routekeeper.settings.Settings` by `make docs`; do not edit by hand.",
        "",
        "Keys are written as in the YAML file (`--config`); `<n>` is an item of a list and",
        "`<name>` a key of a mapping. Every key can also come from the environment variable",
        "shown, which overrides the file key by key (a section or a list takes a JSON value;",
        "names are not case-sensitive, so mapping keys set there come out in lower case, and",
        "a backend that only the environment names needs its `type` there too). Keys inside",
        "a list have no variable of their own: set the whole list in the list's variable.",
        "`workspace` is only taken from `--workspace` or `ROUTEKEEPER_WORKSPACE`, never from",
        "the file.",
    ]
    for table, rows in _settings_tables():
        title = f"`{table.path}`" if table.path else "Top level"
        tag = f", `{table.tag}`" if table.tag else ""
        out += ["", f"## {title}{tag} ({table.model.__name__})", ""]
        out += [p + "\n" for p in _paragraphs(table.model.__dict__.get("__doc__"))]
        out += [
            "| key | type | default | description | environment variable |",
            "|---|---|---|---|---|",
            *rows,
        ]
    return _document(out)


# -- command line -----------------------------------------------------------------------------


def _param_type(param: Any, ctx: Any) -> str:
    display = getattr(param, "display_type", None)
    if callable(display):  # typer's own command classes
        label = str(display(ctx))
    else:  # click's
        label = str(param.type.name)
    label = label.removeprefix("<").removesuffix(">")
    if getattr(param, "is_flag", False):
        label = "flag"
    bounds = []
    low = getattr(param, "min", getattr(getattr(param, "type", None), "min", None))
    high = getattr(param, "max", getattr(getattr(param, "type", None), "max", None))
    if low is not None:
        bounds.append(f">= {low}")
    if high is not None:
        bounds.append(f"<= {high}")
    label = label.removesuffix(" range")
    if getattr(param, "multiple", False) and not label.startswith("list"):
        label = f"list[{label}]"
    return label + (f" ({', '.join(bounds)})" if bounds else "")


def _param_default(param: Any) -> str:
    if param.required:
        return "required"
    value = param.default
    if callable(value) or value is None or value == [] or value == ():
        return ""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return _code(str(value).lower())
    return _code(str(value))


def _param_row(param: Any, ctx: Any) -> str:
    if param.param_type_name == "argument":
        name = " ".join(param.get_usage_pieces(ctx))  # as the usage line spells it
    else:
        name = ", ".join([*param.opts, *param.secondary_opts])
    help_text = param.help or ""
    envvar = getattr(param, "envvar", None)
    if isinstance(envvar, str):
        help_text += f" (environment: `{envvar}`)"
    cells = [_code(name), _cell(_param_type(param, ctx)), _param_default(param), _cell(help_text)]
    return "| " + " | ".join(cells) + " |"


def _subcommands(command: Any, ctx: Any) -> list[str]:
    if not hasattr(command, "commands"):
        return []
    return [n for n in command.list_commands(ctx) if not command.commands[n].hidden]


def _commands(command: Any, ctx: Any) -> Iterator[tuple[Any, Any]]:
    """Every command below ``command`` and itself, in the order ``--help`` lists them."""
    yield command, ctx
    for name in _subcommands(command, ctx):
        sub = command.commands[name]
        yield from _commands(sub, type(ctx)(sub, info_name=name, parent=ctx))


def cli_reference() -> str:
    """docs/cli.md: every command and subcommand with its options and arguments."""
    root = typer.main.get_command(app)
    out = [
        "# Command-line reference",
        "",
        "Generated from the `routekeeper` command by `make docs`; do not edit by hand.",
        "Every command also takes `--help`.",
    ]
    for command, ctx in _commands(root, root.context_class(root, info_name="routekeeper")):
        path = ctx.command_path
        pieces = command.collect_usage_pieces(ctx)
        out += ["", f"## `{path}`", "", f"`{' '.join([path, *pieces])}`", ""]
        out += [p + "\n" for p in _paragraphs(command.help)]
        names = _subcommands(command, ctx)
        if names:
            out += ["Commands: " + ", ".join(f"`{path} {n}`" for n in names) + ".", ""]
        params = [p for p in command.params if not getattr(p, "hidden", False)]
        if params:
            out += [
                "| option or argument | type | default | help |",
                "|---|---|---|---|",
                *(_param_row(p, ctx) for p in params),
                "",
            ]
    return _document(out)


def main() -> None:
    """Rewrite both references; run in the checkout's top directory."""
    if not SETTINGS_DOC.parent.is_dir():
        raise SystemExit(f"no {SETTINGS_DOC.parent}/ here: run this in the checkout")
    SETTINGS_DOC.write_text(settings_reference(), encoding="utf-8")
    CLI_DOC.write_text(cli_reference(), encoding="utf-8")
    print(f"wrote {SETTINGS_DOC} and {CLI_DOC}")


if __name__ == "__main__":
    main()
