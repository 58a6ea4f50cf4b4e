"""A correction click changes the extreme-point model's mask only the way the click says.

The model answers a correction by segmenting the object again from its prompt and every click so
far (``backend.segmenters.extreme``), and that answer can move parts the click was not about:
measured on real photos, a positive click on a headlight's missed chrome rim in box mode came back
as the rim alone (IoU 0.81 -> 0.35). So its answer to one new click is merged with the mask the
annotator saw before it: after a positive click the mask keeps every pixel it had and gains what the
answer adds; after a negative click it loses what the answer removes and gains nothing. A spill is
removed by negative clicks, a missed part added by positive ones, as the annotator's guide says.

Serving keeps the previous mask with the object (``AnsweredMask`` in ``backend.known_objects``);
where it has none (the object was answered by another process, or several clicks arrive at once)
the model's answer is used as it is. The interactive benchmark applies the same rule
(``backend.evaluation.clicks``), so its figures are what an annotator gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def corrected_mask(previous: np.ndarray, answer: np.ndarray, positive: bool) -> np.ndarray:
    """The mask after one correction click: ``previous`` with what ``answer`` adds (a positive
    click) or without what it removes (a negative one)."""
    return previous | answer if positive else previous & answer


@dataclass(frozen=True)
class AnsweredMask:
    """The mask answered for an object, packed (its bounding box's bits) and the ids of the
    correction clicks it answered, in click order."""

    shape: tuple[int, int]
    top_left: tuple[int, int]  # (row, col) of the packed box in the image
    box_shape: tuple[int, int]
    bits: bytes
    click_ids: tuple[str, ...]

    @classmethod
    def of(cls, mask: np.ndarray, click_ids: Sequence[str]) -> "AnsweredMask":
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if len(rows) == 0:
            return cls(mask.shape, (0, 0), (0, 0), b"", tuple(click_ids))
        crop = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        return cls(mask.shape, (int(rows[0]), int(cols[0])), crop.shape, np.packbits(crop).tobytes(),
                   tuple(click_ids))

    @property
    def nbytes(self) -> int:
        return len(self.bits)

    def mask(self) -> np.ndarray:
        mask = np.zeros(self.shape, bool)
        (row, col), (height, width) = self.top_left, self.box_shape
        if height and width:
            bits = np.unpackbits(np.frombuffer(self.bits, np.uint8), count=height * width)
            mask[row:row + height, col:col + width] = bits.reshape(height, width).astype(bool)
        return mask


def follow_correction(answer: np.ndarray, previous: AnsweredMask | None, clicks: Sequence) -> np.ndarray:
    """The model's ``answer`` for an object with correction ``clicks`` (``known_objects.Click``, in
    click order), merged with ``previous`` when the clicks are exactly those it answered plus one."""
    if previous is None or previous.shape != answer.shape or len(clicks) != len(previous.click_ids) + 1:
        return answer
    if tuple(click.region_id for click in clicks[:-1]) != previous.click_ids or clicks[-1].region_id is None:
        return answer
    return corrected_mask(previous.mask(), answer, clicks[-1].positive)
