"""Opaque, time-ordered identifiers: a prefix, then 48 bits of milliseconds and 80 random bits in
Crockford base32 (so ids sort by creation, which gives stable cursor pagination)."""

from __future__ import annotations

import re
import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id(prefix: str) -> str:
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


def is_id(prefix: str, value: str) -> bool:
    return re.fullmatch(prefix + r"_[0-9a-hjkmnp-tv-z]{26}", value) is not None
