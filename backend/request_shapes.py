"""Shape checks of the Label Studio JSON that ``/predict`` reads: tasks, their annotations,
predictions and drafts, and the regions in them.

The rest of the backend reads these payloads assuming the types Label Studio sends (a region's
``value`` is an object, labels are lists of strings, coordinates are numbers, …). Checking the fields
it reads once, here, turns any other shape into a ``ShapeError`` naming the field
(``tasks[0].drafts[1].result[3].value.x must be a number``) instead of a crash deep inside. Fields
the backend never reads are not checked, so regions of other controls pass as they are. An
interactive request is checked whole (``check_context``, ``check_task``: any bad field is a 400); a
batch task keeps its well-formed regions (``valid_task``), so one bad region costs only itself.
"""

from __future__ import annotations

import math

_STRINGS = ("from_name", "to_name", "type")
_BOOLS = ("is_positive", "readonly", "dynamic")
_NUMBERS = ("image_rotation", "original_width", "original_height", "score")
_VALUE_NUMBERS = ("x", "y", "width", "height", "rotation")
_VALUE_LABELS = ("labels", "brushlabels", "keypointlabels", "rectanglelabels", "polygonlabels")
_TASK_SOURCES = ("annotations", "predictions", "drafts")


class ShapeError(ValueError):
    """A field of the request has the wrong type; the message names it by its path."""


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_list_of_strings(value, where: str) -> None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ShapeError(f"{where} must be a list of strings")


def check_region(region, where: str) -> None:
    """A region (a result item) with the types the backend reads, where present."""
    if not isinstance(region, dict):
        raise ShapeError(f"{where} must be an object")
    for key in _STRINGS:
        if key in region and not isinstance(region[key], str):
            raise ShapeError(f"{where}.{key} must be a string")
    region_id = region.get("id")
    if region_id is not None and (isinstance(region_id, bool) or not isinstance(region_id, (str, int))):
        raise ShapeError(f"{where}.id must be a string")
    for key in _BOOLS:
        if key in region and not isinstance(region[key], bool):
            raise ShapeError(f"{where}.{key} must be true or false")
    for key in _NUMBERS:
        if region.get(key) is not None and not _is_number(region[key]):
            raise ShapeError(f"{where}.{key} must be a number")
    if "value" not in region:
        return
    value = region["value"]
    if not isinstance(value, dict):
        raise ShapeError(f"{where}.value must be an object")
    for key in _VALUE_NUMBERS:
        if value.get(key) is not None and not _is_number(value[key]):
            raise ShapeError(f"{where}.value.{key} must be a number")
    for key in _VALUE_LABELS:
        if key in value:
            _check_list_of_strings(value[key], f"{where}.value.{key}")
    if "format" in value and not isinstance(value["format"], str):
        raise ShapeError(f"{where}.value.format must be a string")
    if "rle" in value and not isinstance(value["rle"], list):
        raise ShapeError(f"{where}.value.rle must be a list of numbers")
    if "points" in value:
        points = value["points"]
        if not isinstance(points, list) or not all(
                isinstance(p, list) and len(p) == 2 and all(_is_number(c) for c in p) for p in points):
            raise ShapeError(f"{where}.value.points must be a list of [x, y] number pairs")


def check_regions(regions, where: str) -> None:
    if not isinstance(regions, list):
        raise ShapeError(f"{where} must be a list of regions")
    for index, region in enumerate(regions):
        check_region(region, f"{where}[{index}]")


def check_task(task, where: str) -> None:
    """A task with the types the backend reads: id, data, and the regions of its annotations,
    predictions and drafts (items given by id only are allowed and not read)."""
    for item, item_where in _task_items(task, where):
        check_regions(item["result"], f"{item_where}.result")


def valid_task(task, where: str) -> tuple[dict, list[str]]:
    """``task`` (checked like ``check_task``) with its malformed regions left out, and a message per
    region left out: in batch, one bad region costs only itself. Raises ShapeError for the task's
    own fields."""
    dropped: list[str] = []
    kept_results: dict[int, list] = {}
    for item, item_where in _task_items(task, where):
        kept = []
        for index, region in enumerate(item["result"]):
            try:
                check_region(region, f"{item_where}.result[{index}]")
                kept.append(region)
            except ShapeError as exc:
                dropped.append(str(exc))
        kept_results[id(item)] = kept
    cleaned = dict(task)
    for key in _TASK_SOURCES:
        if isinstance(task.get(key), list):
            cleaned[key] = [{**item, "result": kept_results[id(item)]} if id(item) in kept_results else item
                            for item in task[key]]
    return cleaned, dropped


def _task_items(task, where: str) -> list[tuple[dict, str]]:
    """The annotations, predictions and drafts of ``task`` that hold a ``result`` list, with their
    paths, after checking the task's own fields (raises ShapeError)."""
    if not isinstance(task, dict):
        raise ShapeError(f"{where} must be an object")
    task_id = task.get("id")
    if task_id is not None and (isinstance(task_id, bool) or not isinstance(task_id, int)):
        raise ShapeError(f"{where}.id must be an integer")
    if task.get("data") is not None and not isinstance(task["data"], dict):
        raise ShapeError(f"{where}.data must be an object")
    items = []
    for key in _TASK_SOURCES:
        sources = task.get(key)
        if sources is None:
            continue
        if not isinstance(sources, list):
            raise ShapeError(f"{where}.{key} must be a list")
        for index, item in enumerate(sources):
            item_where = f"{where}.{key}[{index}]"
            if isinstance(item, int) and not isinstance(item, bool):
                continue  # listed by id
            if not isinstance(item, dict):
                raise ShapeError(f"{item_where} must be an object or an id")
            for stamp in ("created_at", "updated_at"):
                if item.get(stamp) is not None and not isinstance(item[stamp], str):
                    raise ShapeError(f"{item_where}.{stamp} must be a string")
            if item.get("result") is not None:
                if not isinstance(item["result"], list):
                    raise ShapeError(f"{item_where}.result must be a list of regions")
                items.append((item, item_where))
    return items


def check_context(context, where: str = "params.context") -> None:
    """An interactive request's context: an object with a ``result`` list of regions."""
    if not isinstance(context, dict) or not isinstance(context.get("result"), list):
        raise ShapeError(f'{where} must be an object with a "result" list of regions')
    check_regions(context["result"], f"{where}.result")
