"""Project labeling policies applied to every mask after any model.

Configured in the ML connection's *extra params* (Label Studio -> project -> Model -> edit) and/or
the server default (env ``POLICIES`` as JSON, or ``POLICIES_FILE``), in this shape::

    {"policies": {
        "*":   {"fill_holes": true, "min_island_px": 50},
        "Car": {"merge_overlapping": true, "fill_holes": 400}
    }}

``"*"`` applies to every label; a label's own entry overrides it key by key. Both sources are
merged per label and key, the project's extra params winning over the server default
(``backend.project_options``); then the label entry overrides ``"*"``. Keys:

- ``fill_holes``: ``true`` fills every hole, an integer N fills holes of at most N px, ``false`` none.
- ``min_island_px``: removes parts (8-connected) smaller than N px, except the largest part.
- ``keep_largest``: keeps only the largest part.
- ``dilate_px``: grows the mask by N px (at most 100).
- ``merge_overlapping``: masks of the label that overlap become one region. In batch this joins
  the task's new masks; in interactive use a new mask also joins the masks already on the
  annotator's screen that it overlaps (see ``backend.model``), and the returned region is the union.

Per-mask policies run in the order fill_holes, min_island_px, keep_largest, dilate_px, on each
model mask and again on every merged union, so each returned mask obeys its label's policy. They
run on the mask's bounding box (grown by the dilation), not the whole image: the cost follows the
object, not the photo. Every value is range-checked when ``/setup`` stores it (``PolicySet.parse``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import cv2
import numpy as np
from scipy import ndimage

from backend.prompts import Segmentation

WILDCARD = "*"
_EIGHT_CONNECTED = np.ones((3, 3), bool)
MAX_DILATE_PX = 100
MAX_AREA_PX = 1_000_000_000  # larger areas mean "all" for any image the backend loads


class PolicyError(ValueError):
    """The policies config is malformed; the message names the offending key."""


# -- pure functions on bool masks (H, W) ---------------------------------------------------------


def fill_holes(mask: np.ndarray, max_hole_px: int | None = None) -> np.ndarray:
    """Fills holes (4-connected background not reaching the border); only those of at most
    ``max_hole_px`` pixels when given."""
    filled = ndimage.binary_fill_holes(mask)
    if max_hole_px is None:
        return filled
    holes, count = ndimage.label(filled & ~mask)
    if count == 0:
        return mask.copy()
    sizes = np.bincount(holes.ravel())
    small = np.flatnonzero(sizes <= max_hole_px)
    return mask | np.isin(holes, small[small > 0])


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected component ids (0 = background) and pixel counts per id (index 0 unused)."""
    labels, _ = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels, sizes


def remove_islands(mask: np.ndarray, min_px: int) -> np.ndarray:
    """Removes parts smaller than ``min_px`` pixels; the largest part always stays."""
    labels, sizes = _components(mask)
    if sizes.size <= 2:
        return mask.copy()
    keep = np.flatnonzero(sizes >= min_px)
    keep = np.union1d(keep[keep > 0], [int(np.argmax(sizes))])
    return np.isin(labels, keep)


def keep_largest(mask: np.ndarray) -> np.ndarray:
    """Keeps only the largest part."""
    labels, sizes = _components(mask)
    if sizes.size <= 2:
        return mask.copy()
    return labels == int(np.argmax(sizes))


def dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """Grows the mask by ``px`` pixels: every pixel within Euclidean distance ``px`` of it. One
    distance transform, so the cost does not grow with ``px``."""
    if px <= 0 or not mask.any():
        return mask.copy()
    distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return distance <= px


def bounding_window(mask: np.ndarray, pad: int) -> tuple[slice, slice] | None:
    """The rows and columns of ``mask``'s bounding box grown by ``pad`` (clipped to the mask), or
    None when the mask is empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    height, width = mask.shape
    return (slice(max(rows[0] - pad, 0), min(rows[-1] + pad + 1, height)),
            slice(max(cols[0] - pad, 0), min(cols[-1] + pad + 1, width)))


def overlap_groups(masks: list[np.ndarray]) -> list[list[int]]:
    """Indices of ``masks`` grouped so that masks overlapping (directly or through others) share a
    group; groups in order of their first member."""
    parent = list(range(len(masks)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    windows = [bounding_window(mask, 0) for mask in masks]
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            if root(i) != root(j) and _overlap(masks[i], windows[i], masks[j], windows[j]):
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(masks)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def _overlap(a: np.ndarray, window_a, b: np.ndarray, window_b) -> bool:
    """Whether masks ``a`` and ``b`` share a pixel, compared inside their boxes' intersection only."""
    if window_a is None or window_b is None:
        return False
    rows = slice(max(window_a[0].start, window_b[0].start), min(window_a[0].stop, window_b[0].stop))
    cols = slice(max(window_a[1].start, window_b[1].start), min(window_a[1].stop, window_b[1].stop))
    if rows.start >= rows.stop or cols.start >= cols.stop:
        return False
    return bool(np.logical_and(a[rows, cols], b[rows, cols]).any())


# -- configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelPolicy:
    fill_holes: bool | int = False
    min_island_px: int = 0
    keep_largest: bool = False
    dilate_px: int = 0
    merge_overlapping: bool = False

    def clean(self, mask: np.ndarray) -> np.ndarray:
        """The per-mask policies applied to one bool mask (H, W), on its bounding box grown by the
        dilation and one pixel (so background at the box's edge is outside every hole), pasted back."""
        mask = np.asarray(mask, bool)
        window = bounding_window(mask, self.dilate_px + 1)
        cleaned = np.zeros(mask.shape, bool)
        if window is not None:
            cleaned[window] = self._clean_window(mask[window])
        return cleaned

    def _clean_window(self, mask: np.ndarray) -> np.ndarray:
        if self.fill_holes is True:
            mask = fill_holes(mask)
        elif self.fill_holes:
            mask = fill_holes(mask, int(self.fill_holes))
        if self.min_island_px > 0:
            mask = remove_islands(mask, self.min_island_px)
        if self.keep_largest:
            mask = keep_largest(mask)
        if self.dilate_px > 0:
            mask = dilate(mask, self.dilate_px)
        return mask


_KEYS = {f.name for f in fields(LabelPolicy)}


def _check_value(where: str, key: str, value) -> None:
    if key not in _KEYS:
        raise PolicyError(f'{where}: unknown policy "{key}" (known: {", ".join(sorted(_KEYS))})')
    if key in ("keep_largest", "merge_overlapping") and not isinstance(value, bool):
        raise PolicyError(f"{where}.{key} must be true or false, got {_shown(value)}")
    if key == "fill_holes" and not (isinstance(value, bool) or (isinstance(value, int) and 0 < value <= MAX_AREA_PX)):
        raise PolicyError(f"{where}.fill_holes must be true, false or a maximum hole area in px "
                          f"(1 to {MAX_AREA_PX}), got {_shown(value)}")
    if key in ("min_island_px", "dilate_px"):
        top = MAX_DILATE_PX if key == "dilate_px" else MAX_AREA_PX
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise PolicyError(f"{where}.{key} must be a whole number of pixels from 0 to {top}, got {_shown(value)}")


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def _check_section(section, name: str) -> None:
    """Raises PolicyError naming the label and key when ``section`` (the ``policies`` value) is malformed."""
    if not isinstance(section, dict):
        raise PolicyError(f'"{name}" must be an object of labels ("*" for all) to policies')
    for label, entry in section.items():
        where = f'{name}["{label}"]'
        if not isinstance(entry, dict):
            raise PolicyError(f"{where} must be an object of policies, e.g. {{\"fill_holes\": true}}")
        for key, value in entry.items():
            _check_value(where, key, value)


@dataclass(frozen=True)
class Applied:
    """One mask ``PolicySet.apply`` gives back, and which of the masks already in the task it took
    in: ``absorbed`` indexes ``existing[segmentation.label]``. That is the one decision of what a
    merge replaces; the labeling page removes exactly those regions (``backend.labeling_page``)."""

    segmentation: Segmentation
    absorbed: tuple[int, ...] = ()
    sources: tuple[int, ...] = ()  # which of the segmentations given to ``apply`` it holds


class PolicySet:
    """The policies of one project (``ProjectOptions.policies``: the server default's and the project's)."""

    def __init__(self, entries: dict[str, dict] | None = None):
        """``entries``: {label or "*": {policy key: value}}, checked (``PolicySet.parse``)."""
        self._entries: dict[str, dict] = {label: dict(entry) for label, entry in (entries or {}).items()}

    @classmethod
    def parse(cls, section, name: str = "policies") -> "PolicySet":
        """The policies of an extra-params ``policies`` value; raises PolicyError naming the label
        and key (under ``name``) when a value is malformed or out of range."""
        _check_section(section, name)
        return cls(section)

    def updated(self, later: "PolicySet") -> "PolicySet":
        """These policies with ``later``'s over them, per label and policy key."""
        entries = {label: dict(entry) for label, entry in self._entries.items()}
        for label, entry in later._entries.items():
            entries.setdefault(label, {}).update(entry)
        return PolicySet(entries)

    @property
    def labels(self) -> set[str]:
        """The labels with policies of their own, and "*" when there are policies for every label."""
        return set(self._entries)

    def for_label(self, label: str) -> LabelPolicy:
        return LabelPolicy(**{**self._entries.get(WILDCARD, {}), **self._entries.get(label, {})})

    def apply(self, segmentations: list[Segmentation],
              existing: dict[str, list[np.ndarray]] | None = None) -> list[Applied]:
        """Cleans each mask, then merges overlapping masks of labels with ``merge_overlapping``,
        among themselves and with ``existing`` masks (label -> bool masks already in the task, which
        are not returned themselves, but named in ``Applied.absorbed`` when a merge took them in). A
        merged region keeps the lowest score of its new members. Empty masks are dropped."""
        cleaned = [replace(s, mask=self.for_label(s.label).clean(s.mask)) for s in segmentations]
        result: list[Applied] = []
        merged_labels: set[str] = set()
        for index, seg in enumerate(cleaned):
            policy = self.for_label(seg.label)
            if not policy.merge_overlapping:
                result.append(Applied(seg, sources=(index,)))
            elif seg.label not in merged_labels:
                merged_labels.add(seg.label)
                result += self._merge_label(seg.label, cleaned, (existing or {}).get(seg.label, []), policy)
        return [a for a in result if a.segmentation.mask.any()]

    @staticmethod
    def _merge_label(label: str, cleaned: list[Segmentation], existing: list[np.ndarray],
                     policy: LabelPolicy) -> list[Applied]:
        indices = [i for i, s in enumerate(cleaned) if s.label == label]
        new = [cleaned[i] for i in indices]
        masks = [s.mask for s in new] + [m.astype(bool) for m in existing]
        merged = []
        for group in overlap_groups(masks):
            members = [new[i] for i in group if i < len(new)]
            sources = tuple(indices[i] for i in group if i < len(new))
            if not members:
                continue  # only existing masks: already on screen
            if len(group) == 1:
                merged.append(Applied(members[0], sources=sources))
                continue
            union = np.logical_or.reduce([masks[i] for i in group])
            absorbed = tuple(sorted(i - len(new) for i in group if i >= len(new)))
            merged.append(Applied(replace(members[0], mask=policy.clean(union), score=min(s.score for s in members),
                                          model="+".join(dict.fromkeys(s.model for s in members))), absorbed,
                                  sources))
        return merged
