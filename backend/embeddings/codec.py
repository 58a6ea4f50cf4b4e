"""Embedding values <-> store entries (bytes), which carry their key and a checksum.

A value is what a SAM segmenter's encoder produced: a tensor, or dicts/lists/tuples of tensors
(SAM 2.1 keeps several feature maps) with plain numbers and strings beside them. The payload is
``torch.save`` output, read back with ``torch.load(weights_only=True)`` (no pickled code runs),
always onto the CPU.

An entry is ``MAGIC``, the key's length (4 bytes, little-endian), the SHA-256 of key and payload,
the key (UTF-8), the payload. ``decode`` serves nothing it cannot vouch for: bytes changed after
writing (checksum), another key's entry copied over this one (key), an entry of another format
(older backends wrote bare ``torch.save`` output) and, given ``shapes``, tensors of shapes the model
does not take all raise ``CodecError``, which the cache treats as a miss.

With ``half=True`` float32 tensors are stored as float16, which halves the store's size; decoding
turns them back into float32, so the decoder sees the dtype it was built for. A tensor whose
values do not fit float16 (|x| > 65504) stays float32. ``tests/test_embedding_codec.py`` shows
SAM's masks from float16 embeddings match the float32 ones.
"""

from __future__ import annotations

import hashlib
import io
import struct
from typing import Any

import torch

MAGIC = b"SEGEMB\x00\x02"  # the entry format; the last byte is its version
_KEY_LENGTH = struct.Struct("<I")
_DIGEST_BYTES = 32
_HEADER = len(MAGIC) + _KEY_LENGTH.size + _DIGEST_BYTES
_FLOAT16_MAX = torch.finfo(torch.float16).max
_HALVED = "__float32_as_float16__"  # marks a float32 tensor stored as float16


class CodecError(ValueError):
    """Bytes that are not a sound entry for the key asked for (corrupt, foreign, older format,
    wrong shapes); the message says which."""


def encode(value: Any, key: str, half: bool = True) -> bytes:
    """The store entry of ``value`` under ``key``."""
    buffer = io.BytesIO()
    torch.save(_pack(value, half), buffer)
    payload, key_bytes = buffer.getvalue(), key.encode()
    return b"".join((MAGIC, _KEY_LENGTH.pack(len(key_bytes)), _digest(key_bytes, payload), key_bytes, payload))


def decode(data: bytes, key: str, shapes: Any = None) -> Any:
    """The value in ``data``, an entry for ``key``; with ``shapes`` (see ``shapes_of``), also
    checks that its tensors have those shapes. Raises ``CodecError``."""
    if not data.startswith(MAGIC):
        raise CodecError("not an entry of this format (written by an older backend, or foreign)")
    if len(data) < _HEADER:
        raise CodecError("truncated entry")
    (key_length,) = _KEY_LENGTH.unpack_from(data, len(MAGIC))
    digest = data[len(MAGIC) + _KEY_LENGTH.size:_HEADER]
    key_bytes, payload = data[_HEADER:_HEADER + key_length], data[_HEADER + key_length:]
    if _digest(key_bytes, payload) != digest:
        raise CodecError("checksum mismatch (the entry changed after it was written)")
    if key_bytes != key.encode():
        raise CodecError("the entry belongs to another key")
    try:
        value = _unpack(torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True))
    except Exception as exc:
        raise CodecError(f"unreadable payload ({type(exc).__name__})") from None
    if shapes is not None and shapes_of(value) != shapes:
        raise CodecError(f"tensor shapes {shapes_of(value)} where the model takes {shapes}")
    return value


def shapes_of(value: Any) -> Any:
    """The structure of ``value`` with each tensor replaced by its shape (a tuple) and anything
    else by None: what ``decode(shapes=...)`` compares."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, dict):
        return {key: shapes_of(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [shapes_of(item) for item in value]
    return None


def _digest(key_bytes: bytes, payload: bytes) -> bytes:
    digest = hashlib.sha256(_KEY_LENGTH.pack(len(key_bytes)))
    digest.update(key_bytes)
    digest.update(payload)
    return digest.digest()


def _pack(value: Any, half: bool) -> Any:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if half and tensor.dtype == torch.float32 and (tensor.numel() == 0 or tensor.abs().max() <= _FLOAT16_MAX):
            return {_HALVED: tensor.half()}
        return tensor
    if isinstance(value, dict):
        return {key: _pack(item, half) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_pack(item, half) for item in value)
    return value


def _unpack(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_HALVED}:
            return value[_HALVED].float()
        return {key: _unpack(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_unpack(item) for item in value)
    return value
