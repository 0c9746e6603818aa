"""What JSON means on every surface: RFC 8259 as written. Python's parser also accepts NaN and
Infinity, which no other JSON consumer takes back; both are refused here."""

from __future__ import annotations

import json
import sys
from typing import Any


class JSONRefused(ValueError):
    """Not standard JSON; the message says why in words a client author understands."""


def loads_strict(text: str | bytes) -> Any:
    """Parse standard JSON. Raises JSONRefused (a ValueError) for invalid JSON, NaN or
    Infinity, nesting deeper than the parser can follow, and an integer with more digits
    than Python converts (``sys.get_int_max_str_digits()``, 4300 by default)."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except JSONRefused:
        raise
    except json.JSONDecodeError as exc:
        message = exc.msg[0].lower() + exc.msg[1:]
        raise JSONRefused(f"{message} at line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise JSONRefused("it is nested too deeply") from None
    except ValueError:
        # The only other ValueError the parser raises: the integer conversion limit.
        raise JSONRefused(
            f"it has an integer of more than {sys.get_int_max_str_digits()} digits"
        ) from None


def _refuse_constant(name: str) -> Any:
    raise JSONRefused(f"{name} is not JSON")


def json_kind(value: Any) -> str:
    """What a decoded JSON value is, for messages: ``an array``, ``a string``, ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
