"""Embedding values <-> bytes for the shared store.

A value is what a SAM segmenter's encoder produced: a tensor, or dicts/lists/tuples of tensors
(SAM 2.1 keeps several feature maps) with plain numbers and strings beside them. Bytes are
``torch.save`` output, read back with ``torch.load(weights_only=True)`` (no pickled code runs),
always onto the CPU.

With ``half=True`` float32 tensors are stored as float16, which halves the store's size; decoding
turns them back into float32, so the decoder sees the dtype it was built for. A tensor whose
values do not fit float16 (|x| > 65504) stays float32. ``tests/test_embedding_codec.py`` shows
SAM's masks from float16 embeddings match the float32 ones.
"""

from __future__ import annotations

import io
from typing import Any

import torch

FORMAT_VERSION = 1
_FLOAT16_MAX = torch.finfo(torch.float16).max
_HALVED = "__float32_as_float16__"  # marks a float32 tensor stored as float16


class CodecError(ValueError):
    """Bytes that are not an embedding this codec wrote (foreign, truncated, older format)."""


def encode(value: Any, half: bool = True) -> bytes:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT_VERSION, "value": _pack(value, half)}, buffer)
    return buffer.getvalue()


def decode(data: bytes) -> Any:
    try:
        stored = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CodecError(f"not a stored embedding ({type(exc).__name__})") from None
    if not isinstance(stored, dict) or stored.get("format") != FORMAT_VERSION:
        raise CodecError("not a stored embedding of this backend's format")
    return _unpack(stored["value"])


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
