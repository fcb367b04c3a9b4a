"""AMF0 (Adobe's Action Message Format, version 0): the values of RTMP commands and stream metadata.

Decoding takes every type OBS, FFmpeg and hardware encoders send: number, boolean, string and long
string, object and ECMA array (as dicts), strict array (a list), null and undefined (None), date (a
float of milliseconds), typed object (its properties) and XML document (a string). References and the
switch to AMF3 are refused: encoders of live streams do not send them. Input is bounded: nesting
depth, element counts and string lengths cannot make it allocate more than the message holds.
"""

from __future__ import annotations

import struct
from typing import Any

MAX_DEPTH = 32

NUMBER, BOOLEAN, STRING, OBJECT, MOVIECLIP, NULL, UNDEFINED, REFERENCE = range(8)
ECMA_ARRAY, OBJECT_END, STRICT_ARRAY, DATE, LONG_STRING, UNSUPPORTED, RECORDSET, XML_DOCUMENT = range(8, 16)
TYPED_OBJECT, AMF3 = 16, 17

_DOUBLE = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class AmfError(ValueError):
    """The bytes are not AMF0 this decoder takes."""


def decode_all(data: bytes | memoryview) -> list[Any]:
    """Every value in `data`, in order (a command: its name, transaction id, then its arguments)."""
    view = memoryview(data)
    values = []
    offset = 0
    while offset < len(view):
        value, offset = _value(view, offset, 0)
        values.append(value)
    return values


def _need(view: memoryview, offset: int, size: int) -> None:
    if offset + size > len(view):
        raise AmfError("the value runs past the end of the message")


def _string(view: memoryview, offset: int, long: bool = False) -> tuple[str, int]:
    size_struct = _U32 if long else _U16
    _need(view, offset, size_struct.size)
    (size,) = size_struct.unpack_from(view, offset)
    offset += size_struct.size
    _need(view, offset, size)
    try:
        return bytes(view[offset:offset + size]).decode("utf-8"), offset + size
    except UnicodeDecodeError:
        raise AmfError("a string is not UTF-8") from None


def _properties(view: memoryview, offset: int, depth: int) -> tuple[dict[str, Any], int]:
    found: dict[str, Any] = {}
    while True:
        _need(view, offset, 2)
        if view[offset] == 0 and view[offset + 1] == 0:
            _need(view, offset, 3)
            if view[offset + 2] == OBJECT_END:
                return found, offset + 3
        key, offset = _string(view, offset)
        value, offset = _value(view, offset, depth + 1)
        found[key] = value


def _value(view: memoryview, offset: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise AmfError("values nest too deep")
    _need(view, offset, 1)
    marker = view[offset]
    offset += 1
    if marker == NUMBER:
        _need(view, offset, 8)
        return _DOUBLE.unpack_from(view, offset)[0], offset + 8
    if marker == BOOLEAN:
        _need(view, offset, 1)
        return view[offset] != 0, offset + 1
    if marker == STRING:
        return _string(view, offset)
    if marker in (LONG_STRING, XML_DOCUMENT):
        return _string(view, offset, long=True)
    if marker == OBJECT:
        return _properties(view, offset, depth)
    if marker == TYPED_OBJECT:
        _, offset = _string(view, offset)  # the class name
        return _properties(view, offset, depth)
    if marker == ECMA_ARRAY:
        _need(view, offset, 4)  # the count is a hint encoders get wrong: the end marker decides
        return _properties(view, offset + 4, depth)
    if marker == STRICT_ARRAY:
        _need(view, offset, 4)
        (count,) = _U32.unpack_from(view, offset)
        offset += 4
        if count > len(view) - offset:  # every element takes at least a byte
            raise AmfError("a strict array claims more elements than the message holds")
        items = []
        for _ in range(count):
            item, offset = _value(view, offset, depth + 1)
            items.append(item)
        return items, offset
    if marker in (NULL, UNDEFINED, UNSUPPORTED):
        return None, offset
    if marker == DATE:
        _need(view, offset, 10)
        return _DOUBLE.unpack_from(view, offset)[0], offset + 10  # milliseconds; the time zone is unused
    if marker == REFERENCE:
        raise AmfError("AMF0 references are not taken")
    if marker == AMF3:
        raise AmfError("AMF3 values are not taken")
    raise AmfError(f"unknown AMF0 marker {marker}")


def encode(*values: Any) -> bytes:
    """AMF0 for these values: None, bool, int/float, str, dict (an object), list (a strict array)."""
    out = bytearray()
    for value in values:
        _encode(out, value, 0)
    return bytes(out)


def _encode_string(out: bytearray, text: str) -> None:
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise AmfError("a string over 65535 bytes")
    out += _U16.pack(len(raw))
    out += raw


def _encode(out: bytearray, value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise AmfError("values nest too deep")
    if value is None:
        out.append(NULL)
    elif isinstance(value, bool):
        out += bytes((BOOLEAN, 1 if value else 0))
    elif isinstance(value, int | float):
        out.append(NUMBER)
        out += _DOUBLE.pack(float(value))
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) > 0xFFFF:
            out.append(LONG_STRING)
            out += _U32.pack(len(raw))
            out += raw
        else:
            out.append(STRING)
            out += _U16.pack(len(raw))
            out += raw
    elif isinstance(value, dict):
        out.append(OBJECT)
        for key, item in value.items():
            _encode_string(out, str(key))
            _encode(out, item, depth + 1)
        out += b"\x00\x00\x09"
    elif isinstance(value, list | tuple):
        out.append(STRICT_ARRAY)
        out += _U32.pack(len(value))
        for item in value:
            _encode(out, item, depth + 1)
    else:
        raise AmfError(f"cannot encode {type(value).__name__} in AMF0")
