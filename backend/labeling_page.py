"""Interactive answers shaped for what Label Studio 1.23's labeling page does with them.

Observed in the page (``web/libs/editor``: ``Annotation.setSuggestions / acceptSuggestion /
acceptAllSuggestions``, ``Regions.getConnectedDynamicRegions``) and checked in headless Chromium
(``tests/browser``):

- The regions of an answer become *suggestions*, replacing the previous answer's. With Auto-Accept
  Suggestions on they are accepted at once; otherwise when the annotator clicks accept.
- Accepting a suggestion whose ``id`` is the id of a region on screen replaces that region.
- Right after accepting (or rejecting), the page deletes every *dynamic* region, i.e. every point
  or box drawn with a smart tool. A region in an answer is dynamic when it says ``"dynamic": true``.
- Each request carries every keypoint of the drawn point's label on screen, dynamic or not; only
  dynamic ones carry ``is_positive``. ``readonly`` regions say ``"readonly": true``.

So, for the extreme-point tool (4 clicks per object):

- a partial group (1-3 points) is answered with the points themselves (same ids, not dynamic):
  with Auto-Accept on they replace the dynamic points and stay on screen, and the next click's
  request still carries them;
- a finished group is answered with its mask plus the points that are no longer dynamic, now
  marked dynamic, so accepting the mask clears every point of the object. A project that keeps the
  points (project option ``keep_extreme_points``) gets them back read-only instead: they stay in
  the annotation, and later requests skip them (``without_kept_points``);
- a merged mask (policy ``merge_overlapping``) takes the id of a mask on screen of its own control
  (brush or polygon) that it absorbed, so it replaces that region; other absorbed masks come back
  dynamic, so they are deleted. Which masks a merge absorbed is decided once, by the policy
  (``policies.Applied.absorbed``); a mask answered as several regions (one polygon per part) hands
  each absorbed mask to the first of its parts that overlaps it.

Correction clicks (``backend.routing``: a click near an object refines it; ``backend.known_objects``:
the objects answered on the task) are answered with the refined mask under the **id of the mask it
refines**, so accepting it replaces that region (with Auto-Accept on, or after ✓), or the earlier
suggestion; no second region. Earlier parts a refined polygon mask no longer has come back dynamic
(removed). The correction clicks themselves are dynamic on the page (drawn with a smart tool), so
accepting the refined mask clears them; any that are no longer dynamic are echoed for removal
(also when the project keeps extreme points: those stay read-only, the corrections go).

A prompt the backend cannot serve (a label without a mask tool, a point outside the image, a box of
no area, extreme points on one line, no segmenter for its kind) cannot be an error: Label Studio
1.23 answers the page's ``/api/ml/<id>/interactive-annotating`` with HTTP 200 and ``{"errors":
[…]}`` for any non-2xx from the backend, and the page reads only ``data.result``, so an error shows
nothing at all (no toast; the drawn region just stays). What the page does show of an answer is its
regions, and a region's ``meta.text`` appears in the region's details (the *Meta* note, under the
region's label when it is selected). So an unserved prompt's regions come back as they were drawn
(same ids, not dynamic: they stay on screen) with the reason as their note (``unserved_echoes``),
beside the masks of the prompts that could be served.
"""

from __future__ import annotations

import numpy as np

from backend.policies import Applied
from backend.prompts import PromptKind, Segmentation
from backend.routing import Routed

_ECHO_KEYS = ("id", "from_name", "to_name", "type", "original_width", "original_height", "image_rotation", "value")


def echo_region(region: dict, *, remove: bool = False, read_only: bool = False) -> dict:
    """A copy of ``region`` (as the page sent it) to answer back: it replaces the page's region of
    the same id; with ``remove`` the page deletes it on accept; with ``read_only`` it stays, locked."""
    echo = {key: region[key] for key in _ECHO_KEYS if key in region}
    if remove:
        echo["dynamic"] = True
    if read_only:
        echo["readonly"] = True
    return echo


UNSERVED_NOTE = "Not segmented: "


def unserved_echoes(unserved: list[tuple[list[dict], str]]) -> list[dict]:
    """Echoes of the regions of prompts that could not be served, each with the reason as its note
    (``meta.text``, shown in the region's details)."""
    return [{**echo_region(region), "meta": {"text": [f"{UNSERVED_NOTE}{reason}"]}}
            for regions, reason in unserved for region in regions]


def without_kept_points(regions: list) -> list:
    """The context regions without the read-only ones: points of finished objects that the project
    keeps (see ``finished_point_echoes``), which must not become prompts again."""
    return [region for region in regions if not (isinstance(region, dict) and region.get("readonly") is True)]


def pending_point_echoes(pending_regions: list[dict]) -> list[dict]:
    """Echoes that keep the points of unfinished extreme groups on screen."""
    return [echo_region(region) for region in pending_regions]


def finished_point_echoes(group: list[dict], keep: bool) -> list[dict]:
    """Echoes for the points of an extreme group that has just got its mask: all of them read-only
    when the project keeps points, else those the page no longer marks as drawn (no ``is_positive``:
    echoed earlier), marked for removal (the page removes the still-dynamic ones by itself)."""
    if keep:
        return [echo_region(region, read_only=True) for region in group]
    return [echo_region(region, remove=True) for region in group if "is_positive" not in region]


def page_answer(regions: list[dict], covered: list[Segmentation], parents: list[int], applied: list[Applied],
                routed: Routed, on_screen: dict[str, list[tuple[dict, np.ndarray]]], keep_points: bool) -> list[dict]:
    """The interactive answer's regions for the page.

    regions: the mask regions (brush or polygon); ``covered[i]`` is the segmentation of what region i
    covers, ``applied[parents[i]]`` the policy output it is (a part of).
    routed: the prompts the segmentations answer, with the regions that made them and the objects
    they answer (``Routed.objects``: a refined object's earlier mask regions are replaced).
    on_screen: label -> (region, bool mask (H, W)) of the masks already on screen that may merge, in
    the order ``PolicySet.apply`` got them as ``existing``.

    The answer holds each of ``regions`` in order (its id possibly changed) as its only mask regions
    without ``dynamic``; the rest are echoes.
    """
    answer = []
    handed: set[tuple[str, int]] = set()  # (label, index on screen) already replaced by a region
    earlier = [[mask for source in a.sources if routed.objects[source] is not None
                for mask in routed.objects[source].mask_regions] for a in applied]
    for region, part, parent in zip(regions, covered, parents):
        label = applied[parent].segmentation.label
        screen = on_screen.get(label, [])
        replaced = []
        for index in applied[parent].absorbed:
            if (label, index) not in handed and np.logical_and(part.mask, screen[index][1]).any():
                handed.add((label, index))
                replaced.append(screen[index][0])
        # A refined object's mask takes the id of its earlier mask; a merged one, of a mask it absorbed.
        own = next((mask for mask in earlier[parent] if mask.get("from_name") == region["from_name"]), None)
        if own is not None:
            earlier[parent].remove(own)
        kept = own or next((other for other in replaced if other.get("from_name") == region["from_name"]), None)
        answer.append({**region, "id": kept["id"]} if kept else region)
        answer += [echo_region(other, remove=True) for other in replaced if other is not kept]
    # Earlier parts (polygons) that no part of the refined mask took over go; a brush mask is one region.
    answer += [echo_region(mask, remove=True) for left in earlier for mask in left if mask.get("type") != "brushlabels"]
    for prompt, group, obj in zip(routed.prompts, routed.prompt_regions, routed.objects):
        if prompt.kind is PromptKind.EXTREME:
            anchors = [region for region in group if region.get("id") in obj.anchor_ids]
            corrections = [region for region in group if region.get("id") not in obj.anchor_ids]
            answer += finished_point_echoes(anchors, keep_points) + correction_echoes(corrections)
    return answer + pending_point_echoes(routed.pending_regions)


def correction_echoes(corrections: list[dict]) -> list[dict]:
    """Echoes for an object's correction clicks: those the page no longer marks as drawn, marked for
    removal, so that accepting the refined mask clears every click (kept points or not)."""
    return [echo_region(region, remove=True) for region in corrections if "is_positive" not in region]
