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


def new_id(prefix: str, *, now_ms: int | None = None) -> str:
    if not _PREFIX.match(prefix):
        raise ValueError(f"id prefix must be 2-8 lowercase letters, got {prefix!r}")
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms & ((1 << 48) - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


def has_prefix(value: str, prefix: str) -> bool:
    body = value.removeprefix(f"{prefix}_")
    return body != value and len(body) == 26 and all(c in _ALPHABET for c in body)


def id_pattern(prefix: str) -> str:
    """A regular expression matching exactly the ids :func:`new_id` makes for ``prefix``."""
    if not _PREFIX.match(prefix):
        raise ValueError(f"id prefix must be 2-8 lowercase letters, got {prefix!r}")
    return rf"^{prefix}_[{_ALPHABET}]{{26}}$"
