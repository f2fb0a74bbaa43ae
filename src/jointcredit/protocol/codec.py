"""A small, safe binary codec for protocol payloads.

Payloads cross a trust boundary, so they are never pickled: this codec only knows plain data —
None, bool, int (any size, so Paillier ciphertexts fit), float, str, bytes, list/tuple, dict with
str keys, and numpy arrays of numeric or bool dtype. Decoding cannot execute code and rejects
anything malformed with :class:`MalformedMessageError`.

Wire format: one tag byte per value, lengths as unsigned LEB128 varints.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from jointcredit.errors import MalformedMessageError

_NONE, _FALSE, _TRUE, _INT, _NEGINT, _FLOAT, _STR, _BYTES, _LIST, _DICT, _ARRAY = range(11)

_ALLOWED_DTYPES = {
    "b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f4", "f8",
}  # fmt: skip
_MAX_DEPTH = 32


def _put_varint(out: bytearray, value: int) -> None:
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _encode(obj: Any, out: bytearray, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise MalformedMessageError(f"payload nests deeper than {_MAX_DEPTH} levels")
    if obj is None:
        out.append(_NONE)
    elif obj is True or obj is False or isinstance(obj, np.bool_):
        out.append(_TRUE if obj else _FALSE)
    elif isinstance(obj, (int, np.integer)) or type(obj).__name__ == "mpz":
        value = int(obj)
        out.append(_INT if value >= 0 else _NEGINT)
        magnitude = abs(value)
        raw = magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "big")
        _put_varint(out, len(raw))
        out += raw
    elif isinstance(obj, (float, np.floating)):
        out.append(_FLOAT)
        out += struct.pack(">d", float(obj))
    elif isinstance(obj, str):
        raw = obj.encode("utf-8")
        out.append(_STR)
        _put_varint(out, len(raw))
        out += raw
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)
        out.append(_BYTES)
        _put_varint(out, len(raw))
        out += raw
    elif isinstance(obj, (list, tuple)):
        out.append(_LIST)
        _put_varint(out, len(obj))
        for item in obj:
            _encode(item, out, depth + 1)
    elif isinstance(obj, dict):
        out.append(_DICT)
        _put_varint(out, len(obj))
        for key, item in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"payload dict keys must be str, got {type(key).__name__}")
            _encode(key, out, depth + 1)
            _encode(item, out, depth + 1)
    elif isinstance(obj, np.ndarray):
        dtype = obj.dtype.newbyteorder("<") if obj.dtype.byteorder == ">" else obj.dtype
        code = dtype.kind + str(dtype.itemsize)
        if code not in _ALLOWED_DTYPES:
            raise TypeError(f"cannot encode numpy array of dtype {obj.dtype}")
        out.append(_ARRAY)
        code_raw = code.encode()
        out.append(len(code_raw))
        out += code_raw
        _put_varint(out, obj.ndim)
        for dim in obj.shape:
            _put_varint(out, dim)
        raw = np.ascontiguousarray(obj, dtype=dtype.newbyteorder("<")).tobytes()
        _put_varint(out, len(raw))
        out += raw
    else:
        raise TypeError(f"cannot encode {type(obj).__name__} in a protocol payload")


def pack(obj: Any) -> bytes:
    """Encode plain data (see module docstring) to bytes."""
    out = bytearray()
    _encode(obj, out, 0)
    return bytes(out)


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.buf):
            raise MalformedMessageError("payload truncated")
        chunk = self.buf[self.pos : end]
        self.pos = end
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def varint(self) -> int:
        shift = 0
        value = 0
        while True:
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise MalformedMessageError("length field too long")


def _decode(reader: _Reader, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise MalformedMessageError("payload nests too deeply")
    tag = reader.byte()
    if tag == _NONE:
        return None
    if tag == _FALSE:
        return False
    if tag == _TRUE:
        return True
    if tag in (_INT, _NEGINT):
        value = int.from_bytes(reader.take(reader.varint()), "big")
        return value if tag == _INT else -value
    if tag == _FLOAT:
        return struct.unpack(">d", reader.take(8))[0]
    if tag == _STR:
        try:
            return reader.take(reader.varint()).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedMessageError("invalid UTF-8 in string") from exc
    if tag == _BYTES:
        return reader.take(reader.varint())
    if tag == _LIST:
        return [_decode(reader, depth + 1) for _ in range(reader.varint())]
    if tag == _DICT:
        result = {}
        for _ in range(reader.varint()):
            key = _decode(reader, depth + 1)
            if not isinstance(key, str):
                raise MalformedMessageError("dict key is not a string")
            result[key] = _decode(reader, depth + 1)
        return result
    if tag == _ARRAY:
        code = reader.take(reader.byte()).decode("ascii", errors="replace")
        if code not in _ALLOWED_DTYPES:
            raise MalformedMessageError(f"array dtype {code!r} not allowed")
        shape = tuple(reader.varint() for _ in range(reader.varint()))
        raw = reader.take(reader.varint())
        dtype = np.dtype("<" + code if code != "b1" else "?")
        if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != len(raw):
            raise MalformedMessageError("array byte length does not match its shape")
        return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    raise MalformedMessageError(f"unknown payload tag {tag}")


def unpack(data: bytes) -> Any:
    """Decode bytes produced by :func:`pack`; raise MalformedMessageError on anything else."""
    reader = _Reader(bytes(data))
    value = _decode(reader, 0)
    if reader.pos != len(reader.buf):
        raise MalformedMessageError("trailing bytes after payload")
    return value
