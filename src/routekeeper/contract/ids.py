"""Prefixed, time-ordered ids (``rep_01J...``).

26 Crockford base32 characters: 48 bits of milliseconds since the epoch, then 80 random bits,
so ids of one kind sort by creation time and serve as pagination cursors.
"""

from __future__ import annotations

import os
import re
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PREFIX = re.compile(r"^[a-z]{2,8}$")
# Two digits (10 bits) at a time: the 26 digits are 13 lookups.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_SHIFTS = tuple(range(120, -1, -10))
_CHECKED: set[str] = set()
"""Prefixes already checked (a set lookup is cheaper than the pattern on every id)."""


def new_id(prefix: str, *, now_ms: int | None = None) -> str:
    if prefix not in _CHECKED:
        if not _PREFIX.match(prefix):
            raise ValueError(f"id prefix must be 2-8 lowercase letters, got {prefix!r}")
        _CHECKED.add(prefix)
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms & ((1 << 48) - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{''.join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])}"


def has_prefix(value: str, prefix: str) -> bool:
    body = value.removeprefix(f"{prefix}_")
    return body != value and len(body) == 26 and all(c in _ALPHABET for c in body)


def id_pattern(prefix: str) -> str:
    """A regular expression matching exactly the ids :func:`new_id` makes for ``prefix``."""
    if not _PREFIX.match(prefix):
        raise ValueError(f"id prefix must be 2-8 lowercase letters, got {prefix!r}")
    return rf"^{prefix}_[{_ALPHABET}]{{26}}$"
