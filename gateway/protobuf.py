"""The protobuf wire format, the little of it the gateway writes and reads by hand: OTLP
exports (gateway.tracing, gateway.otlplogs), gRPC health checks (gateway.health.probe) and the
devcluster's gRPC echo. Messages small and fixed enough that the ``protobuf`` runtime and
generated classes would cost more than these few lines.
"""
from __future__ import annotations

import struct

_DOUBLE = struct.Struct("<d")
FIXED64 = struct.Struct("<Q")           # fixed64 fields (OTLP's nanosecond times): FIXED64.pack(n)


def varint(n: int) -> bytes:
    """An unsigned varint (a negative int64 is written as its two's complement first)."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_varint(data: bytes, i: int) -> tuple[int, int]:
    """(the varint at ``data[i:]``, the index after it); ValueError when it is cut short."""
    value = shift = 0
    while i < len(data):
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7
    raise ValueError("truncated varint")


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): bytes, string, or an embedded message."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def any_value(value: object) -> bytes:
    """OTLP common.v1.AnyValue: string_value 1, bool_value 2, int_value 3, double_value 4."""
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return b"\x18" + varint(value & 0xFFFFFFFFFFFFFFFF)    # int64: two's complement
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return field(1, str(value).encode())


def attribute(number: int, key: str, value: object) -> bytes:
    """An OTLP KeyValue (key 1, value 2) as field ``number`` of its message."""
    return field(number, field(1, key.encode()) + field(2, any_value(value)))
