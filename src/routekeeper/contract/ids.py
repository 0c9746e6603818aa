"""Prefixed, time-ordered ids (``rep_01J...``).

26 Crockford base32 characters: 48 bits of milliseconds since the epoch, then 80 random bits,
so ids of one kind sort by creation time and serve as pagination cursors.
"""

from __future__ import annotations

import os
import re
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PREFIX = re.compile(r"^[a-z]{2,8}$")
# Two digits (10 bits) at a time: the 26 digits are 13 lookups.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_SHIFTS = tuple(range(120, -1, -10))
_CHECKED: set[str] = set()
"""Prefixes already checked (a set lookup is cheaper than the pattern on every id)."""
# The random bits of ids come from os.urandom in blocks of this many bytes, not 10 at a time:
# each call is a system call during which Python lets other threads take the interpreter
# lock, and the caller (the event loop) then waits to get it back; under load that wait was a
# few percent of a request's time on the loop.
_RANDOM_BLOCK = 4096
_random = threading.local()


def _forget_random() -> None:
    """A forked child draws its own bytes (it must never repeat its parent's ids)."""
    global _random
    _random = threading.local()


os.register_at_fork(after_in_child=_forget_random)


def _random_80_bits() -> int:
    """80 bits from the operating system's random source (the thread's own block of it)."""
    local = _random
    block: bytes | None = getattr(local, "block", None)
    at: int = getattr(local, "at", 0)
    if block is None or at + 10 > len(block):
        block, at = os.urandom(_RANDOM_BLOCK), 0
        local.block = block
    local.at = at + 10
    return int.from_bytes(block[at : at + 10], "big")


def new_id(prefix: str, *, now_ms: int | None = None) -> str:
    if prefix not in _CHECKED:
        if not _PREFIX.match(prefix):
            raise ValueError(f"id prefix must be 2-8 lowercase letters, got {prefix!r}")
        _CHECKED.add(prefix)
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms & ((1 << 48) - 1)) << 80 | _random_80_bits()
    return f"{prefix}_{''.join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])}"


def has_prefix(value: str, prefix: str) -> bool:
    body = value.removeprefix(f"{prefix}_")
    return body != value and len(body) == 26 and all(c in _ALPHABET for c in body)


def id_pattern(prefix: str) -> str:
    """A regular expression matching exactly the ids :func:`new_id` makes for ``prefix``."""
    if not _PREFIX.match(prefix):
        raise ValueError(f"id prefix must be 2-8 lowercase letters, got {prefix!r}")
    return rf"^{prefix}_[{_ALPHABET}]{{26}}$"
