"""Tables of the correction-click protocol (``backend.evaluation.clicks``): per method the mean IoU
after 0, 1, 2, … corrections, NoC@90 and how many objects never reached 0.90, the time of a
correction; NoC@90 per category."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.evaluation.clicks import IOU_TARGET
from backend.evaluation.harness import ObjectResult


@dataclass(frozen=True)
class ClickSummary:
    first_clicks: int  # the first prompt's clicks (4 extreme points, 2 for a box)
    objects: int  # objects whose first mask the method gave (the protocol ran on them)
    refused: int  # of those, objects whose corrections the segmenter refused or failed on
    refusal: str  # the first refusal's message, "" when none
    unchanged: bool  # no correction changed any object's IoU (a segmenter that reads no clicks)
    miou_first: float  # mean IoU of the first masks, over every object the protocol ran on
    miou_after: tuple[float, ...]  # mean IoU after 0, 1, … corrections, over objects not refused
    noc: float  # mean NoC@90 over objects not refused (nan when none)
    max_clicks: int
    not_reached: int  # objects not refused that did not reach IOU_TARGET within max_clicks
    click_ms_median: float  # median time of one correction's answer (nan when none ran)
    noc_by_category: dict[str, float]


def summarize_clicks(
    results: list[ObjectResult], methods: list[str], categories: list[str], all_name: str, corrections: int
) -> dict[str, ClickSummary]:
    """Per method that ran the protocol; ``categories`` includes ``all_name`` (every object)."""
    summaries = {}
    for method in methods:
        ran = [result for result in results if result.method == method and result.clicks is not None]
        if not ran:
            continue
        corrected = [result for result in ran if not result.clicks.refused]
        refusals = [result.clicks.refused for result in ran if result.clicks.refused]
        times = [ms for result in corrected for ms in result.clicks.click_ms]
        nan = float("nan")
        summaries[method] = ClickSummary(
            first_clicks=ran[0].clicks.first_clicks,
            objects=len(ran),
            refused=len(refusals),
            refusal=refusals[0] if refusals else "",
            miou_first=float(np.mean([result.clicks.ious[0] for result in ran])),
            unchanged=bool(times) and all(len(set(result.clicks.ious)) == 1 for result in corrected),
            miou_after=tuple(
                float(np.mean([result.clicks.iou_after(k) for result in corrected])) if corrected else nan
                for k in range(corrections + 1)
            ),
            noc=float(np.mean([result.clicks.noc for result in corrected])) if corrected else nan,
            max_clicks=ran[0].clicks.max_clicks,
            not_reached=sum(1 for result in corrected if not result.clicks.reached),
            click_ms_median=float(np.median(times)) if times else nan,
            noc_by_category={
                category: float(np.mean(nocs)) if nocs else nan
                for category in categories
                for nocs in [[r.clicks.noc for r in corrected if category in (all_name, r.category)]]
            },
        )
    return summaries


def click_markdown(summaries: dict[str, ClickSummary], categories: list[str], counts: dict[str, int]) -> list[str]:
    """The protocol's table (rows methods) and NoC@90 per category (columns methods)."""
    if not summaries:
        return []
    any_summary = next(iter(summaries.values()))
    corrections = len(any_summary.miou_after) - 1
    target = f"{IOU_TARGET:.2f}"
    lines = [
        "| correction clicks: method | first prompt (clicks) | objects | "
        + " | ".join(f"IoU after {k}" for k in range(corrections + 1))
        + f" | NoC@{IOU_TARGET * 100:.0f} (cap {any_summary.max_clicks}) | not at {target} by the cap"
        " | ms per correction (median) |",
        "|---|---:|---:|" + "---:|" * (corrections + 1) + "---:|---:|---:|",
    ]
    for method, summary in summaries.items():
        if summary.refused == summary.objects:  # e.g. weights without click channels: see the notes
            cells = [f"{summary.miou_first:.3f}"] + ["refused"] * corrections + ["-"] * 3
            lines.append(f"| {method} | {summary.first_clicks} | {summary.objects} | " + " | ".join(cells) + " |")
            continue
        ious = " | ".join(f"{value:.3f}" for value in summary.miou_after)
        timing = "-" if np.isnan(summary.click_ms_median) else f"{summary.click_ms_median:.1f}"
        lines.append(
            f"| {method} | {summary.first_clicks} | {summary.objects - summary.refused} | {ious} | {summary.noc:.2f} | "
            f"{summary.not_reached} | {timing} |"
        )
    methods = list(summaries)
    lines += ["", f"| NoC@{IOU_TARGET * 100:.0f}: category | objects | " + " | ".join(methods) + " |",
              "|---|---:|" + "---:|" * len(methods)]
    for category in categories:
        cells = [_number(summaries[method].noc_by_category.get(category, float("nan"))) for method in methods]
        lines.append(f"| {category} | {counts[category]} | " + " | ".join(cells) + " |")
    return lines


def click_notes(summaries: dict[str, ClickSummary]) -> list[str]:
    notes = []
    for method, summary in summaries.items():
        if summary.unchanged:
            notes.append(f"{method}: no correction click changed any mask's IoU (its segmenter reads no clicks)")
        if summary.refused:
            notes.append(
                f"{method}: corrections refused or failed on {summary.refused} of {summary.objects} objects "
                f"(left out of its click figures); first: {summary.refusal}"
            )
    return notes


def write_clicks_csv(summaries: dict[str, ClickSummary], path: Path) -> None:
    corrections = max(len(summary.miou_after) for summary in summaries.values()) - 1
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "first_prompt_clicks", "objects", "refused",
                         *(f"miou_after_{k}" for k in range(corrections + 1)),
                         "noc90", "max_clicks", "not_reached", "click_median_ms"])
        for method, summary in summaries.items():
            writer.writerow([method, summary.first_clicks, summary.objects, summary.refused,
                             *(f"{value:.4f}" for value in summary.miou_after),
                             f"{summary.noc:.3f}", summary.max_clicks, summary.not_reached,
                             f"{summary.click_ms_median:.2f}"])


def _number(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.2f}"
