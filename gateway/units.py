"""Durations and sizes as people write them in config files: ``"250ms"``, ``"64KiB"``.

Both parsers raise ValueError with a message fit to show the user after a key path.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction

_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# "1m30s" is a sequence of number+unit parts; "ms" is listed before "m" so it wins.
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(us|ms|s|m|h)")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")

# Decimal and binary multiples are both common; "KB" is 1000 as in SI, "KiB" 1024.
_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
               "kib": 2**10, "mib": 2**20, "gib": 2**30}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)")


def parse_duration(value: str | int | float) -> float:
    """``"250ms"``, ``"2s"``, ``"1.5s"``, ``"1m30s"``, ``"1h"`` or a number -> seconds."""
    if isinstance(value, bool):  # bool is an int subclass: "true" is not a duration
        raise ValueError(f"expected a duration like \"2s\", got {str(value).lower()}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"a duration must be a finite number of seconds >= 0, got {value}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like \"2s\", got {type(value).__name__}")
    text = value.strip()
    if _NUMBER.fullmatch(text):
        return float(text)
    if not _DURATION.fullmatch(text):
        raise ValueError(f'invalid duration "{value}" (use a number with us, ms, s, m or h, '
                         f'e.g. "250ms", "1.5s", "1m30s")')
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))


def parse_size(value: str | int) -> int:
    """``"64KiB"``, ``"1MiB"``, ``"10KB"``, ``"512"`` or an int -> bytes."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f'expected a size like "64KiB", got {value!r}')
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size must not be negative, got {value}")
        return value
    m = _SIZE.fullmatch(value.strip())
    unit = m and _SIZE_UNITS.get(m.group(2).lower())
    if unit is None:
        raise ValueError(f'invalid size "{value}" (use bytes or B, KB, MB, GB, KiB, MiB, GiB, '
                         f'e.g. "64KiB")')
    # Fraction keeps "1.1KB" exactly 1100 where float arithmetic would not.
    size = Fraction(m.group(1)) * unit
    if size.denominator != 1:
        raise ValueError(f'invalid size "{value}": not a whole number of bytes')
    return int(size)
