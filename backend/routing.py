"""Label Studio regions -> prompts, and prompts -> the segmenter that answers them.

Regions to prompts (``prompts_from_regions``), per label of the prompt tools in the config:

- each rectangle is one BOX prompt;
- extreme-tool points of a label, in the order given, make one EXTREME prompt per 4 positive points;
  1-3 points of an unfinished group are *pending* (no mask, no error) so the annotator can keep
  clicking. Once a group is complete, the label's next point on that tool is a **correction** of
  the label's latest object when it is negative (Alt+click), or positive and inside that object's
  box (the extreme points' box) by more than ``EDGE_FRACTION`` of its side (extreme points lie on
  their box's edges, so a point on an edge starts an object, or the same object drawn again); any
  other positive point starts a new group of 4. A negative point with no object to correct, or
  inside an unfinished group, is ignored;
- clicks of a click tool (positive or negative) of the same label inside the box of a rectangle or
  of an extreme object join the smallest such object as corrections; the other clicks of a label
  form one POINTS prompt (clicks accumulate, as Label Studio sends every smart region of the tool
  with each request); clicks that are all negative make no prompt.

An object's prompt carries its corrections after its anchors, in click order: EXTREME ``points``
(4 + k, 2) with ``point_labels`` 1 for the 4 extreme points, then 1/0 per correction; BOX ``points``
are its clicks.

``known`` objects (``backend.known_objects``: what this process answered on the task) stand in for
regions the page no longer sends: once a mask is accepted, the page deletes its points or
rectangle, and the next click arrives alone. A known object whose anchors are still in the request
is formed from the request as above (the request is the whole truth) and keeps its mask's ids; one
whose anchors are gone takes part with its remembered anchors and clicks, so a click can correct
it, and the request's clicks it already holds (by region id) stay its own.

Prompts come out in the order of the first region that made them; a known object that no region
of the request touches is no prompt. A region that cannot be used (unknown label, outside the
image, zero-area box) is reported in ``Routed.errors`` and skipped; the caller decides whether that
fails the request (interactive) or only that region (batch).

For batch pre-annotation, ``prompts_from_task`` reads the prompts in a task's own predictions
and (not cancelled) annotations (extreme points followed by correction clicks give the corrected
prompt); a prompt found in several of them (e.g. an imported box that an annotator kept) is used once.

Segmenter choice (``choose_segmenter``): EXTREME -> the extreme-point model, else SAM (which takes
the points' bounding box plus the 4 points as positive clicks, and the corrections); BOX -> SAM,
else the extreme-point model's box mode; POINTS -> SAM only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from backend.known_objects import Click, KnownObject
from backend.labeling import LabelingConfig, ToolKind
from backend.prompts import Prompt, PromptKind
from backend.protocol import RegionError, box_px, point_px

EXTREME_POINTS = 4
# A positive extreme-tool point closer than this to the edge of the latest object's box (fraction of
# the box's side on that axis, at least EDGE_MIN_PX) is not a correction but starts a group: extreme
# points lie on their box's edges, so it is the next object's point, or the same object drawn again.
EDGE_FRACTION, EDGE_MIN_PX = 0.03, 2.0
_PROMPT_TYPES = {"rectanglelabels", "keypointlabels"}


class RoutingError(ValueError):
    """No loaded segmenter can answer a prompt."""


class Segmenter(Protocol):
    def segment(self, image, prompt: Prompt): ...


class SegmenterChoice(Protocol):
    """The loaded segmenters (``backend.segmenter_set.SegmenterSet``); None when not loaded."""

    sam: Segmenter | None
    extreme: Segmenter | None


@dataclass
class Routed:
    """Prompts found in a list of regions.

    prompt_regions: for each prompt (same order), the regions that made it.
    pending: notes on point groups still waiting for clicks (e.g. 3 of 4 extreme points).
    pending_regions: the keypoint regions of those unfinished extreme groups, in the order given.
    errors: one message per unusable region (or unusable group of extreme points).
    error_regions: for each error, the regions it is about.
    image_rotation: the annotator's view rotation reported by the prompt regions (0 if none).
    objects: for each prompt, the EXTREME or BOX object it answers as this request leaves it (anchors,
    corrections, and the mask regions of the known object it refines), or None (POINTS).
    """

    prompts: list[Prompt] = field(default_factory=list)
    prompt_regions: list[list[dict]] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    pending_regions: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    error_regions: list[list[dict]] = field(default_factory=list)
    image_rotation: int = 0
    objects: list[KnownObject | None] = field(default_factory=list)

    def unusable(self, message: str, regions: list[dict]) -> None:
        self.errors.append(message)
        self.error_regions.append(regions)


@dataclass
class _Click:
    order: int
    label: str
    point: tuple[float, float]
    positive: bool
    region: dict

    @property
    def id(self):
        return self.region.get("id")


@dataclass(eq=False)
class _Object:
    """An EXTREME or BOX object while the request is read: its anchors, its corrections, and the
    request's regions that belong to it (``order``: the first one's place; None: none so far)."""

    kind: PromptKind
    tool: str
    label: str
    box: tuple[float, float, float, float]
    anchor_ids: tuple
    anchor_points: np.ndarray
    clicks: list[Click]
    known: KnownObject | None = None
    order: int | None = None
    regions: list[tuple[int, dict]] = field(default_factory=list)  # (place in the request, region)

    @classmethod
    def remembered(cls, known: KnownObject) -> "_Object":
        return cls(known.kind, known.tool, known.label, known.box, known.anchor_ids, known.anchor_points,
                   list(known.clicks), known)

    def take(self, order: int, region: dict) -> None:
        """A region of the request belongs to this object."""
        self.order = order if self.order is None else min(self.order, order)
        self.regions.append((order, region))

    def correct(self, click: _Click) -> None:
        self.clicks.append(Click(click.id, click.point, click.positive))
        self.take(click.order, click.region)

    def prompt(self) -> Prompt:
        points = np.array([c.point for c in self.clicks], np.float32).reshape(-1, 2)
        labels = np.array([1 if c.positive else 0 for c in self.clicks], np.int64)
        if self.kind is PromptKind.BOX:
            return Prompt(PromptKind.BOX, self.label, box=self.box, points=points, point_labels=labels)
        return Prompt(PromptKind.EXTREME, self.label, points=np.concatenate([self.anchor_points, points]),
                      point_labels=np.concatenate([np.ones(EXTREME_POINTS, np.int64), labels]))

    def state(self) -> KnownObject:
        """The object as this request leaves it (its mask regions and answered mask still those of the
        known object)."""
        return KnownObject(self.kind, self.tool, self.label, self.box, self.anchor_ids, self.anchor_points,
                           tuple(self.clicks), self.known.mask_regions if self.known else (),
                           self.known.answer if self.known else None)


def prompts_from_regions(regions: list, config: LabelingConfig, width: int, height: int,
                         known: Sequence[KnownObject] = ()) -> Routed:
    """Prompts in ``regions`` (Label Studio result dicts) for an image of ``width`` x ``height`` px;
    ``known``: the objects answered on this task before, oldest first (see the module docstring)."""
    routed = Routed()
    boxes: list[tuple[int, str, tuple[float, float, float, float], dict]] = []
    clicks: list[_Click] = []
    extreme: dict[tuple[str, str], list[_Click]] = {}
    rotation_seen = False
    for order, region in enumerate(regions):
        if not isinstance(region, dict) or region.get("from_name") not in config.tools:
            continue  # masks, other controls, relations: not prompts
        if isinstance(region.get("value"), dict) and ("rle" in region["value"] or "points" in region["value"]):
            continue  # a tool's label that Label Studio copies onto an accepted mask or polygon: not a prompt
        tool = config.tools[region["from_name"]]
        what = f'{region.get("type", "region")} "{tool.name}" #{order + 1}'
        try:
            label = _label(region, config, what)
            value = region["value"]
            if tool.kind is ToolKind.RECTANGLE:
                boxes.append((order, label, box_px(value, width, height, what), region))
            else:
                click = _Click(order, label, point_px(value, width, height, what), _is_positive(region), region)
                (clicks if tool.kind is ToolKind.CLICK else extreme.setdefault((tool.name, label), [])).append(click)
        except RegionError as exc:
            routed.unusable(str(exc), [region])
            continue
        if not rotation_seen and isinstance(region.get("image_rotation"), (int, float)):
            routed.image_rotation, rotation_seen = int(region["image_rotation"]), True

    sent = {region.get("id") for region in regions if isinstance(region, dict) and region.get("id") is not None}
    objects = [_Object.remembered(k) for k in known if not sent.intersection(k.anchor_ids)]
    on_screen = {frozenset(k.anchor_ids): k for k in known if sent.intersection(k.anchor_ids)}
    owner = {click_id: obj for obj in objects for click_id in obj.known.click_ids if click_id is not None}
    for (tool_name, label), points in extreme.items():
        _extreme_objects(tool_name, label, points, objects, owner, on_screen, routed)
    for order, label, box, region in boxes:
        rectangle = _Object(PromptKind.BOX, region["from_name"], label, box, (region.get("id"),),
                            np.zeros((0, 2), np.float32), [], on_screen.get(frozenset([region.get("id")])))
        rectangle.take(order, region)
        objects.append(rectangle)
    free_clicks: dict[str, list[_Click]] = {}
    for click in clicks:
        if click.id in owner:
            owner[click.id].take(click.order, click.region)
            continue
        inside = [obj for obj in objects if obj.label == click.label and _contains(obj.box, click.point)]
        if inside:
            min(inside, key=lambda obj: _area(obj.box)).correct(click)
        else:
            free_clicks.setdefault(click.label, []).append(click)

    ordered: list[tuple[int, Prompt, list[dict], KnownObject | None]] = [
        (obj.order, obj.prompt(), [region for _, region in sorted(obj.regions, key=lambda r: r[0])], obj.state())
        for obj in objects if obj.order is not None]
    for label, group in free_clicks.items():
        if not any(c.positive for c in group):
            routed.pending.append(f'clicks for "{label}" are all negative: add a positive click')
            continue
        points, point_labels = _points(group)
        ordered.append((group[0].order, Prompt(PromptKind.POINTS, label, points=points, point_labels=point_labels),
                        [c.region for c in group], None))
    ordered.sort(key=lambda item: item[0])
    routed.prompts = [prompt for _, prompt, _, _ in ordered]
    routed.prompt_regions = [regions_of_prompt for _, _, regions_of_prompt, _ in ordered]
    routed.objects = [obj for _, _, _, obj in ordered]
    return routed


def _extreme_objects(tool_name: str, label: str, points: list[_Click], objects: list[_Object],
                     owner: dict, on_screen: dict, routed: Routed) -> None:
    """The extreme-tool points of one tool and label: groups of 4 become objects (appended to
    ``objects``), corrections join the label's latest object, an unfinished group is pending."""
    mine = [obj for obj in objects if obj.kind is PromptKind.EXTREME and (obj.tool, obj.label) == (tool_name, label)]
    latest = mine[-1] if mine else None
    group: list[_Click] = []
    for point in points:
        if point.id in owner:
            owner[point.id].take(point.order, point.region)
        elif group:
            if point.positive:  # a negative point inside an unfinished group: ignored
                group.append(point)
            if len(group) == EXTREME_POINTS:
                formed = _group_object(tool_name, label, group, on_screen, routed)
                if formed is not None:
                    objects.append(formed)
                    latest = formed
                group = []
        elif latest is not None and (not point.positive or _well_inside(latest.box, point.point)):
            latest.correct(point)
        elif point.positive:
            group = [point]
    if group:
        routed.pending.append(f'"{tool_name}" "{label}": {len(group)} of {EXTREME_POINTS} extreme points')
        routed.pending_regions += [p.region for p in group]


def _group_object(tool_name: str, label: str, group: list[_Click], on_screen: dict,
                  routed: Routed) -> _Object | None:
    """The object of a complete group of extreme points, or None (reported) when they span no area."""
    xy = np.array([p.point for p in group], np.float32)
    if np.ptp(xy[:, 0]) < 1 or np.ptp(xy[:, 1]) < 1:
        routed.unusable(f'extreme points of "{label}" on "{tool_name}" span no area; click the '
                        "top-, bottom-, left- and right-most points of the object", [p.region for p in group])
        return None
    ids = tuple(p.id for p in group)
    box = (float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max()))
    obj = _Object(PromptKind.EXTREME, tool_name, label, box, ids, xy, [], on_screen.get(frozenset(ids)))
    for point in group:
        obj.take(point.order, point.region)
    return obj


def task_sources(task: dict) -> list[list]:
    """The region lists of a task's predictions and not-cancelled annotations, in that order.
    (Interactive requests list predictions by id only; those are skipped.)"""
    results = [p.get("result") for p in task.get("predictions") or [] if isinstance(p, dict)]
    results += [a.get("result") for a in task.get("annotations") or []
                if isinstance(a, dict) and not a.get("was_cancelled")]
    return [result for result in results if isinstance(result, list)]


def has_prompt_regions(task: dict, config: LabelingConfig) -> bool:
    """Whether the task's predictions/annotations hold any region of a prompt tool (no image needed)."""
    return any(isinstance(r, dict) and r.get("from_name") in config.tools for s in task_sources(task) for r in s)


def prompts_from_task(task: dict, config: LabelingConfig, width: int, height: int) -> Routed:
    """Prompts in a task's predictions and not-cancelled annotations, each distinct prompt once."""
    merged = Routed()
    seen: set[tuple] = set()
    for result in task_sources(task):
        routed = prompts_from_regions(result, config, width, height)
        if routed.prompts and not merged.prompts:
            merged.image_rotation = routed.image_rotation
        for prompt, regions, obj in zip(routed.prompts, routed.prompt_regions, routed.objects):
            if _signature(prompt) not in seen:
                seen.add(_signature(prompt))
                merged.prompts.append(prompt)
                merged.prompt_regions.append(regions)
                merged.objects.append(obj)
        merged.pending += routed.pending
        merged.pending_regions += routed.pending_regions
        merged.errors += routed.errors
        merged.error_regions += routed.error_regions
    return merged


def choose_segmenter(prompt: Prompt, segmenters: SegmenterChoice) -> tuple[Segmenter, str]:
    """The segmenter for ``prompt`` and a note when it is a fallback ("" otherwise).
    Raises RoutingError when no loaded segmenter can answer."""
    try:
        return segmenter_for(prompt.kind, segmenters)
    except RoutingError as exc:
        raise RoutingError(f'no segmenter for a {prompt.kind.value} prompt ("{prompt.label}"): {exc}') from None


def segmenter_for(kind: PromptKind, segmenters: SegmenterChoice) -> tuple[Segmenter, str]:
    """The segmenter answering prompts of ``kind``, and a note when it is a fallback ("" otherwise).
    Raises RoutingError saying what is not loaded."""
    if kind is PromptKind.EXTREME:
        if segmenters.extreme is not None:
            return segmenters.extreme, ""
        if segmenters.sam is not None:
            return segmenters.sam, "SAM box and clicks from the extreme points, extreme-point model not loaded"
    elif kind is PromptKind.BOX:
        if segmenters.sam is not None:
            return segmenters.sam, ""
        if segmenters.extreme is not None:
            return segmenters.extreme, "box mode, SAM not loaded"
    elif segmenters.sam is not None:
        return segmenters.sam, ""
    needed = "SAM (set SAM_CHECKPOINT)" if kind is PromptKind.POINTS else "SAM or the extreme-point model"
    raise RoutingError(f"{needed} is not loaded")


# The prompts each kind of tool makes.
_TOOL_PROMPTS = {ToolKind.RECTANGLE: PromptKind.BOX, ToolKind.CLICK: PromptKind.POINTS,
                 ToolKind.EXTREME: PromptKind.EXTREME}


def tools_not_served(config: LabelingConfig, segmenters: SegmenterChoice,
                     extreme_tool_prefix: str = "extreme") -> dict[str, str]:
    """The prompt tools of ``config`` whose every prompt would be answered with an error, because
    no loaded segmenter takes their prompts: tool name -> why, and what to do about it.
    ``extreme_tool_prefix``: the one ``config`` was parsed with (``EXTREME_TOOL_PREFIX``)."""
    not_served = {}
    for tool in config.tools.values():
        try:
            segmenter_for(_TOOL_PROMPTS[tool.kind], segmenters)
        except RoutingError as exc:
            why = (f"{tool.kind.value} tool: {exc}, so each of its prompts is answered with an error; load it "
                   "(see /health) or remove the tool from the labeling config")
            if tool.kind is ToolKind.CLICK and _serves(PromptKind.EXTREME, segmenters) and extreme_tool_prefix:
                # A KeyPointLabels is a click tool by its name alone: one meant for extreme points was misnamed.
                why += (f'; if it is meant for extreme points (4 clicks per object), rename it to start with '
                        f'"{extreme_tool_prefix}" (EXTREME_TOOL_PREFIX), e.g. "{extreme_tool_prefix}_points"')
            not_served[tool.name] = why
    return not_served


def _serves(kind: PromptKind, segmenters: SegmenterChoice) -> bool:
    try:
        segmenter_for(kind, segmenters)
    except RoutingError:
        return False
    return True


def _label(region: dict, config: LabelingConfig, what: str) -> str:
    value = region.get("value")
    if region.get("type") not in _PROMPT_TYPES or not isinstance(value, dict):
        raise RegionError(f"{what} is not a rectangle or keypoint region with a value")
    labels = value.get(region["type"]) or value.get("labels")
    if not isinstance(labels, list) or not labels or not isinstance(labels[0], str):
        raise RegionError(f"{what} has no label: pick a label before drawing")
    if labels[0] not in config.mask_tools_for_label:
        known = ", ".join(sorted(config.mask_tools_for_label)) or "none"
        raise RegionError(f'{what} has label "{labels[0]}", which is not a label of the prompt tools ({known})')
    return labels[0]


def _is_positive(region: dict) -> bool:
    return region.get("is_positive", True) is not False


def _points(clicks: list[_Click]) -> tuple[np.ndarray, np.ndarray]:
    points = np.array([c.point for c in clicks], np.float32).reshape(-1, 2)
    return points, np.array([1 if c.positive else 0 for c in clicks], np.int64)


def _contains(box: tuple[float, float, float, float], point: tuple[float, float]) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def _well_inside(box: tuple[float, float, float, float], point: tuple[float, float]) -> bool:
    """Inside ``box`` and farther than the edge margin from each of its edges."""
    margin_x = max(EDGE_MIN_PX, EDGE_FRACTION * (box[2] - box[0]))
    margin_y = max(EDGE_MIN_PX, EDGE_FRACTION * (box[3] - box[1]))
    return box[0] + margin_x < point[0] < box[2] - margin_x and box[1] + margin_y < point[1] < box[3] - margin_y


def _area(box: tuple[float, float, float, float]) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def _signature(prompt: Prompt) -> tuple:
    """Equal for the same prompt drawn in two places (rounded to 1/100 px)."""
    box = tuple(round(v, 2) for v in prompt.box) if prompt.box is not None else None
    points = tuple(map(tuple, np.round(prompt.points, 2).tolist()))
    return prompt.kind, prompt.label, box, points, tuple(prompt.point_labels.tolist())
