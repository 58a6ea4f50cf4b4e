"""Label Studio's brush RLE of a mask, encoded and decoded with whole-array numpy operations.

The output is byte for byte that of ``label_studio_sdk.converter.brush.mask2rle`` on the
uint8 0/255 mask (which the editor and ``decode_rle`` read), but the SDK encodes in a Python loop
over the runs, a few microseconds each: a mask with a ragged edge on a 600x400 photo has ~30,000
runs (~0.1 s, as long as SAM's decoder on a CPU), and a large photo many more.

Format (``decode_rle``): a header of the value count (32 bits), the word size - 1 (5 bits: 7)
and four run-length field widths - 1 (4 bits each: 3, 4, 8, 16); then, per run of equal values,
"1", the index of the narrowest field that holds the run length - 1 (2 bits), the length - 1 in
that field, and the value (8 bits). A pixel is 4 equal RGBA values, so runs are at least 4 long
and the format's single-value code ("0") never occurs. Runs over 2**16 values are split into
pieces of 2**16 and a rest, all in the 16-bit field; the bits are zero-padded to whole bytes, with
a whole zero byte when they already are (as the SDK does).

``decode_brush_mask`` reads any brush RLE, including the editor's, whose RGBA pixels carry the
label colour and so come as literal codes ("0", then n single values); it reads what the SDK's
``decode_rle`` reads, several times faster (``bench/brush_decode.py``). It is
the one brush decoder: serving (masks on the annotator's screen) and training (annotations) read
brushes with the same rule, ``MASK_ALPHA_MIN``.
"""

from __future__ import annotations

import numpy as np

_CHANNELS = 4  # RGBA, all four the same value
_FIELD_BITS = np.array([3, 4, 8, 16])
_LONGEST_PIECE = 2**16
_HEADER = "00111" + "".join(f"{bits - 1:04b}" for bits in _FIELD_BITS)  # after the 32-bit count


def encode_brush_rle(mask: np.ndarray) -> list[int]:
    """The RLE bytes of ``mask`` (H, W) as a Label Studio brush: 255 where ``mask`` is true
    (non-zero), 0 elsewhere, in every RGBA channel."""
    flat = np.asarray(mask).astype(bool).ravel()
    starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    lengths = _CHANNELS * np.diff(np.append(starts, flat.size))
    values = np.where(flat[starts], 255, 0)

    pieces = (lengths - 1) // _LONGEST_PIECE + 1
    run = np.repeat(np.arange(len(lengths)), pieces)
    piece_lengths = np.full(len(run), _LONGEST_PIECE)
    piece_lengths[np.cumsum(pieces) - 1] = lengths - (pieces - 1) * _LONGEST_PIECE
    field = np.searchsorted(2 ** _FIELD_BITS[:-1], lengths, side="left")[run]  # by the whole run's length
    field_bits = _FIELD_BITS[field]
    codes = (1 << (field_bits + 10)) | (field << (field_bits + 8)) | ((piece_lengths - 1) << 8) | values[run]
    code_bits = field_bits + 11

    # Each code as 32 bits, of which its last code_bits are kept, concatenated in order.
    matrix = np.unpackbits(codes.astype(">u4").view(np.uint8)).reshape(-1, 32)
    body = matrix[np.arange(32) >= 32 - code_bits[:, None]]
    header = np.frombuffer(f"{_CHANNELS * flat.size:032b}{_HEADER}".encode(), np.uint8) - ord("0")
    bit_count = len(header) + len(body)
    padding = np.zeros(8 - bit_count % 8, np.uint8)
    return np.packbits(np.concatenate((header, body, padding))).tolist()


# -- decoding -------------------------------------------------------------------------------------

_WALK_CHUNK_BITS = 1 << 18


class _Bits:
    """Reads fields of up to 25 bits at many bit positions at once from a big-endian bit stream."""

    def __init__(self, data: bytes):
        padded = np.frombuffer(data + bytes(8), np.uint8).astype(np.uint64)
        self.size = 8 * len(data)
        self._words = (padded[:-3] << 24) | (padded[1:-2] << 16) | (padded[2:-1] << 8) | padded[3:]

    def read(self, positions: np.ndarray, widths) -> np.ndarray:
        """The unsigned ``widths``-bit fields (each 1..25) starting at bit ``positions``."""
        positions = np.asarray(positions, np.int64)
        window = (self._words[positions >> 3] << (positions & 7).astype(np.uint64)) & np.uint64(0xFFFFFFFF)
        return (window >> (32 - np.asarray(widths, np.int64)).astype(np.uint64)).astype(np.int64)


# A pixel is in a brush mask when its alpha is at least this: at least half painted. A brush with soft
# edges (alpha 1-127 along the stroke) then keeps its drawn width, instead of growing by its fringe
# (alpha > 0) in one reader and not in another; our own masks are 0/255, which every rule reads alike.
MASK_ALPHA_MIN = 128


def decode_brush_mask(rle: list[int], width: int, height: int) -> np.ndarray:
    """The (height, width) bool mask of a Label Studio brush RLE: where its alpha channel is at least
    ``MASK_ALPHA_MIN``, as ``decode_rle(rle).reshape(height, width, 4)[:, :, 3] >= MASK_ALPHA_MIN`` gives it.

    The SDK's decoder runs a Python loop over every bit field (seconds for a mask drawn in Label
    Studio's editor, whose RGBA pixels are literal codes); here the fields are read with whole-array
    operations, and Python only hops from one code to the next. Raises ValueError on corrupt data.
    """
    bits = _Bits(bytes(rle))
    if bits.size < 53:
        raise ValueError("brush RLE shorter than its header")
    count = int(bits.read(np.array([0]), 16)[0]) << 16 | int(bits.read(np.array([16]), 16)[0])
    word = int(bits.read(np.array([32]), 5)[0]) + 1
    field_bits = bits.read(np.array([37, 41, 45, 49]), 4) + 1
    if count != width * height * _CHANNELS or word > 25:
        raise ValueError(f"brush RLE holds {count} values of {word} bits, not {width} x {height} RGBA bytes")

    # Code layout: literal flag (0 = `n` single words follow, 1 = one word repeated n times), field
    # index (2 bits), n - 1 in that field, then the word(s). Hop from code to code, chunk by chunk.
    starts: list[int] = []
    position, produced = 53, 0
    while produced < count:
        if position + 3 > bits.size:
            raise ValueError("brush RLE is truncated")
        chunk = np.arange(position, min(position + _WALK_CHUNK_BITS, bits.size))
        head = bits.read(chunk, 3)
        sizes = field_bits[head & 3]
        runs = (bits.read(chunk + 3, 16) >> (16 - sizes)) + 1
        lengths = 3 + sizes + np.where(head >> 2 == 1, word, runs * word)
        following, run_list = (chunk + lengths).tolist(), runs.tolist()
        base, end = int(chunk[0]), int(chunk[-1]) + 1
        while base <= position < end and produced < count:
            starts.append(position)
            produced += run_list[position - base]
            position = following[position - base]

    code = np.array(starts, np.int64)
    head = bits.read(code, 3)
    sizes = field_bits[head & 3]
    runs = (bits.read(code + 3, 16) >> (16 - sizes)) + 1
    payload = code + 3 + sizes
    first = np.concatenate(([0], np.cumsum(runs)[:-1]))  # index of each code's first value
    last = np.minimum(first + runs, count)
    if int(payload.max()) + word * int(np.where(head >> 2 == 1, 1, runs).max()) > bits.size:
        raise ValueError("brush RLE is truncated")

    # Pixel k's alpha is value 4k + 3: a repeated code covers pixels first//4 .. last//4; a literal
    # code's alpha values are read one by one.
    repeated = head >> 2 == 1
    run_starts, run_lengths = first[repeated] // 4, last[repeated] // 4 - first[repeated] // 4
    run_values = bits.read(payload[repeated], word)
    literal = np.flatnonzero(~repeated)
    offset = (3 - first[literal]) % 4  # the first alpha value within the code
    per_code = np.maximum((last[literal] - first[literal] - offset + 3) // 4, 0)
    owner = np.repeat(np.arange(len(literal)), per_code)
    within = offset[owner] + 4 * (np.arange(len(owner)) - np.repeat(np.cumsum(per_code) - per_code, per_code))
    literal_pixels = (first[literal][owner] + within) // 4
    literal_values = bits.read(payload[literal][owner] + word * within, word)

    pixel_starts = np.concatenate((run_starts, literal_pixels))
    order = np.argsort(pixel_starts, kind="stable")
    lengths = np.concatenate((run_lengths, np.ones(len(literal_pixels), np.int64)))[order]
    if int(lengths.sum()) != width * height:
        raise ValueError("brush RLE's runs do not cover the image")
    values = np.concatenate((run_values, literal_values))[order]
    return np.repeat(values >= MASK_ALPHA_MIN, lengths).reshape(height, width)
