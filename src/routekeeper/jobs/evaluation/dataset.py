"""The params of an evaluation job, checked at submit, and its dataset: inline items
(``params.dataset``, every bad item a 400 naming its index) or a JSONL file on the server
(``params.dataset_path``, read once, here, into the job's stored input; a malformed line is
kept as an invalid item that fails by itself).

The normalized input is ``{"items": [...], "source": ..., "send_to_model", "checkpoint_every",
"concurrency"}``, each item ``{"prompt", "expected_decision"?, "expected_model"?}`` or
``{"invalid": reason}`` (with ``"line"`` for items of a file): every attempt, and a worker on
another node, runs from exactly these items."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from routekeeper.contract.errors import InvalidRequest
from routekeeper.contract.evaluation import NAME_MAX_CHARS
from routekeeper.contract.strict_json import JSONRefused, json_kind, loads_strict

MAX_ITEMS = 100_000
"""The most items one evaluation holds (inline or from a file)."""
MAX_FILE_BYTES = 64 * 1024 * 1024
"""The largest dataset file read at submit."""
MAX_PROMPT_CHARS = 200_000
CHECKPOINT_EVERY = 50
MAX_CHECKPOINT_EVERY = 10_000
MAX_CONCURRENCY = 32

PARAMS = ("dataset", "dataset_path", "send_to_model", "checkpoint_every", "concurrency")
ITEM_FIELDS = ("prompt", "expected_decision", "expected_model")


def evaluation_input(params: dict[str, Any], dataset_dir: Path) -> dict[str, Any]:
    """The input an evaluation job stores, from its ``params``. Raises InvalidRequest whose
    ``param`` names the bad field (``params.dataset[3].expected_decision``,
    ``params.dataset_path``)."""
    if not isinstance(params, dict):
        raise InvalidRequest(f"params must be an object, got {json_kind(params)}", param="params")
    for key in params:
        if key not in PARAMS:
            raise InvalidRequest(
                f"params.{key}: unknown parameter of an evaluation (known: {', '.join(PARAMS)})",
                param=f"params.{key}",
            )
    inline, path = params.get("dataset"), params.get("dataset_path")
    if (inline is None) == (path is None):
        raise InvalidRequest(
            "an evaluation needs either params.dataset (items) or params.dataset_path "
            "(a JSONL file), not both",
            param="params.dataset",
        )
    if inline is not None:
        items, source = inline_items(inline), {"type": "inline"}
    else:
        file = dataset_file(path, dataset_dir)
        items = file_items(file)
        source = {"type": "file", "path": str(path), "resolved": str(file)}
    return {
        "items": items,
        "source": source,
        "send_to_model": _flag(params, "send_to_model", False),
        "checkpoint_every": _count(
            params, "checkpoint_every", CHECKPOINT_EVERY, 1, MAX_CHECKPOINT_EVERY
        ),
        "concurrency": _count(params, "concurrency", 1, 1, MAX_CONCURRENCY),
    }


def storable_text(value: str, limit: int = 200) -> str:
    """``value`` cut to ``limit`` characters with any lone surrogate (valid JSON, not Unicode
    text) spelled out, so that a message quoting client text can be stored."""
    cut = value if len(value) <= limit else value[:limit] + "..."
    return cut.encode("utf-8", "backslashreplace").decode("utf-8")


def _unicode(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def item_problem(value: Any) -> tuple[str, str] | None:
    """What is wrong with one dataset item, as (field, message); None for a good one. The
    field and message hold storable text only (a malformed line's reason is stored)."""
    if not isinstance(value, dict):
        return "", f"an item must be an object, got {json_kind(value)}"
    for key in value:
        if key not in ITEM_FIELDS:
            return (
                f".{storable_text(key, 40)}",
                f"unknown field (an item has {', '.join(ITEM_FIELDS)})",
            )
    prompt = value.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        got = "an empty string" if isinstance(prompt, str) else json_kind(prompt)
        return ".prompt", f"prompt must be a non-empty string, got {got}"
    if len(prompt) > MAX_PROMPT_CHARS:
        return ".prompt", f"prompt is longer than {MAX_PROMPT_CHARS} characters"
    for name in ("expected_decision", "expected_model"):
        expected = value.get(name)
        if expected is None:
            continue
        if not isinstance(expected, str) or not expected:
            got = "an empty string" if isinstance(expected, str) else json_kind(expected)
            return f".{name}", f"{name} must be a non-empty string, got {got}"
        if len(expected) > NAME_MAX_CHARS:
            return f".{name}", f"{name} is longer than {NAME_MAX_CHARS} characters"
        if not _unicode(expected):
            return f".{name}", f"{name} must be Unicode text (it holds a lone surrogate)"
    if value.get("expected_decision") is None and value.get("expected_model") is None:
        return "", "an item needs expected_decision or expected_model (or both)"
    return None


def _normalized(value: dict[str, Any]) -> dict[str, Any]:
    return {k: value[k] for k in ITEM_FIELDS if value.get(k) is not None}


def inline_items(dataset: Any) -> list[dict[str, Any]]:
    """The items of ``params.dataset``; the first bad one is a 400 naming its index."""
    if not isinstance(dataset, list):
        raise InvalidRequest(
            f"params.dataset must be an array of items, got {json_kind(dataset)}",
            param="params.dataset",
        )
    if not dataset:
        raise InvalidRequest("params.dataset has no items", param="params.dataset")
    if len(dataset) > MAX_ITEMS:
        raise InvalidRequest(
            f"params.dataset has {len(dataset)} items, more than {MAX_ITEMS}",
            param="params.dataset",
        )
    items = []
    for index, value in enumerate(dataset):
        problem = item_problem(value)
        if problem is not None:
            where = f"params.dataset[{index}]{problem[0]}"
            raise InvalidRequest(f"{where}: {problem[1]}", param=where)
        items.append(_normalized(value))
    return items


def dataset_file(path: Any, dataset_dir: Path) -> Path:
    """The dataset file ``path`` names: relative to ``dataset_dir``, or absolute; either way
    it must stay inside ``dataset_dir`` once symlinks and ``..`` are resolved."""
    param = "params.dataset_path"
    if not isinstance(path, str) or not path or "\x00" in path:
        raise InvalidRequest(
            f"{param} must be a non-empty path without NUL, got {json_kind(path)}", param=param
        )
    root = Path(os.path.realpath(dataset_dir))
    try:
        resolved = Path(os.path.realpath(root / path))  # an absolute path replaces root
        inside = resolved.is_relative_to(root) and resolved != root
        found = inside and resolved.is_file()
        size = resolved.stat().st_size if found else 0
    except (OSError, UnicodeError) as exc:  # a name too long, not encodable for the OS
        raise InvalidRequest(
            f"{param}: not a usable file name ({type(exc).__name__})", param=param
        ) from None
    if not inside:
        raise InvalidRequest(
            f"{param}: {path!r} is outside the dataset directory ({root}); give a path "
            "inside it (jobs.dataset_dir)",
            param=param,
        )
    if not found:
        raise InvalidRequest(
            f"{param}: no dataset file {path!r} in the dataset directory ({root})", param=param
        )
    if size > MAX_FILE_BYTES:
        raise InvalidRequest(
            f"{param}: {path!r} is larger than {MAX_FILE_BYTES} bytes", param=param
        )
    return resolved


def file_items(file: Path) -> list[dict[str, Any]]:
    """The items of a JSONL file, one per non-blank line; a line that is not a good item
    becomes ``{"invalid": reason, "line": n}``."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise InvalidRequest(
            f"params.dataset_path: cannot read {file.name}: {exc.strerror}",
            param="params.dataset_path",
        ) from None
    items: list[dict[str, Any]] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        if len(items) == MAX_ITEMS:
            raise InvalidRequest(
                f"params.dataset_path: the file has more than {MAX_ITEMS} items",
                param="params.dataset_path",
            )
        items.append(_line_item(raw, number))
    if not items:
        raise InvalidRequest(
            "params.dataset_path: the file has no items", param="params.dataset_path"
        )
    return items


def _line_item(raw: bytes, number: int) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"invalid": "the line is not UTF-8", "line": number}
    try:
        value = loads_strict(text)
    except JSONRefused as exc:
        return {"invalid": storable_text(f"not JSON: {exc}"), "line": number}
    problem = item_problem(value)
    if problem is not None:
        field = problem[0].lstrip(".")
        return {"invalid": f"{field}: {problem[1]}" if field else problem[1], "line": number}
    return {**_normalized(value), "line": number}


def _flag(params: dict[str, Any], name: str, default: bool) -> bool:
    value = params.get(name, default)
    if not isinstance(value, bool):
        raise InvalidRequest(
            f"params.{name} must be true or false, got {json_kind(value)}", param=f"params.{name}"
        )
    return value


def _count(params: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        got = json_kind(value)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**18:
            got = str(value)
        raise InvalidRequest(
            f"params.{name} must be an integer from {low} to {high}, got {got}",
            param=f"params.{name}",
        )
    return value
