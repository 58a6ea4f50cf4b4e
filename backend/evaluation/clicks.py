"""The interactive protocol of RITM, SimpleClick and SAM's papers, after a method's first mask:
simulated correction clicks (``backend.training.correction_clicks.next_click``: the interior of the
largest error region, positive for a missed part, negative for a spill, jittered by a couple of
pixels) are added to the prompt one at a time and the segmenter answers again with all of them.

Per object it records the IoU after 0, 1, 2, … corrections and NoC@90, the number of clicks until
the mask first reaches 0.90 IoU, counting the first prompt's clicks (4 for extreme points, 2 for a
box: its two corners); an object that does not reach it within ``max_clicks`` counts as
``max_clicks`` and as not reached. The extreme-point model's answers are merged with the mask
before each click, as serving does (``backend.correction_masks``). A segmenter that refuses
correction clicks (``PromptError``, e.g. weights older than the click channels) is recorded as
such, with its first mask's IoU only.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from backend.correction_masks import corrected_mask
from backend.prompts import Prompt, PromptError, PromptKind
from backend.training.correction_clicks import next_click, with_click
from backend.training.validation import iou

IOU_TARGET = 0.90
FIRST_PROMPT_CLICKS = {PromptKind.EXTREME: 4, PromptKind.BOX: 2}


@dataclass(frozen=True)
class ClickProtocol:
    corrections: int = 3  # IoU reported after 0..corrections clicks (all are run even past 0.90)
    max_clicks: int = 20  # NoC cap, the first prompt's clicks included
    jitter_px: float = 2.0


@dataclass(frozen=True)
class ClickOutcome:
    ious: tuple[float, ...]  # after 0, 1, … corrections, as many as were run
    noc: int  # clicks to reach IOU_TARGET, first prompt included; max_clicks when not reached
    reached: bool
    first_clicks: int  # the first prompt's clicks
    max_clicks: int
    click_ms: tuple[float, ...] = ()  # wall time of each correction's answer
    refused: str = ""  # why the segmenter took no corrections (its PromptError), or a failure's summary

    def iou_after(self, corrections: int) -> float:
        """IoU after that many corrections; a mask that was already exact stays so."""
        return self.ious[min(corrections, len(self.ious) - 1)]


def first_prompt_clicks(prompt: Prompt) -> int:
    if prompt.kind not in FIRST_PROMPT_CLICKS:
        raise ValueError(f"no click count for a {prompt.kind.value} prompt")
    return FIRST_PROMPT_CLICKS[prompt.kind]


def correct(
    segment: Callable[[Prompt], np.ndarray],
    prompt: Prompt,
    first_mask: np.ndarray,
    truth: np.ndarray,
    protocol: ClickProtocol,
    rng: np.random.Generator,
    merge: bool = False,
) -> ClickOutcome:
    """Correction clicks after ``first_mask`` (the answer to ``prompt``): at least
    ``protocol.corrections`` of them, and more until the IoU reaches IOU_TARGET or the clicks
    reach ``protocol.max_clicks``. ``segment`` answers a prompt with an (H, W) bool mask; with
    ``merge``, each answer is merged with the mask before the click as serving merges the
    extreme-point model's (``backend.correction_masks``)."""
    first_clicks = clicks = first_prompt_clicks(prompt)
    mask, ious, click_ms = first_mask, [iou(first_mask, truth)], []

    def outcome(noc: int | None, refused: str = "") -> ClickOutcome:
        reached = noc is not None and not refused
        return ClickOutcome(tuple(ious), noc if reached else protocol.max_clicks, reached, first_clicks,
                            protocol.max_clicks, tuple(click_ms), refused)

    noc = clicks if ious[0] >= IOU_TARGET and clicks <= protocol.max_clicks else None
    while len(click_ms) < protocol.corrections or (noc is None and clicks < protocol.max_clicks):
        click = next_click(mask, truth, rng, protocol.jitter_px)
        if click is None:  # the mask is exact: nothing left to click
            break
        prompt = with_click(prompt, click.x, click.y, click.positive)
        start = time.perf_counter()
        try:
            answer = segment(prompt)
        except PromptError as exc:
            return outcome(None, f"takes no corrections: {exc}")
        except Exception as exc:  # noqa: BLE001 - recorded per object, as the harness records first-mask failures
            return outcome(None, traceback.format_exception_only(exc)[-1].strip())
        click_ms.append((time.perf_counter() - start) * 1000)
        if answer.shape != truth.shape:  # a segmenter bug, not a hard object: stop
            raise ValueError(f"a correction was answered with a {answer.shape} mask for a {truth.shape} image")
        mask = corrected_mask(mask, answer, click.positive) if merge else answer
        clicks += 1
        ious.append(iou(mask, truth))
        if noc is None and ious[-1] >= IOU_TARGET and clicks <= protocol.max_clicks:
            noc = clicks
    return outcome(noc)
