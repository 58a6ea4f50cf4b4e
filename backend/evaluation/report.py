"""Tables and chart of an evaluation: per-category mIoU (markdown, CSV, grouped bar chart PNG),
mean boundary F-score and mean fraction of the mask outside the object (markdown, CSV), latency
per method with its stages, the correction-click protocol (``click_report``), each named object's
IoU, and the raw per-object results."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from backend.evaluation.click_report import ClickSummary, click_markdown, click_notes, summarize_clicks, write_clicks_csv
from backend.evaluation.harness import ObjectResult

ALL = "all"  # the row/group of every object together (mean over objects, not over categories)


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p90_ms: float
    objects: int
    failures: int
    stage_median_ms: dict[str, float]  # per stage the segmenter reported (e.g. coarse, refine); may be empty


@dataclass(frozen=True)
class Summary:
    """methods in column order; categories sorted, then ALL; miou[category][method], likewise the
    mean boundary F-score (boundary_f) and mean fraction of the mask outside the object (outside)."""

    methods: list[str]
    categories: list[str]
    miou: dict[str, dict[str, float]]
    counts: dict[str, int]
    latency: dict[str, Latency]
    boundary_f: dict[str, dict[str, float]]
    outside: dict[str, dict[str, float]]
    boundary_tolerance_px: float
    named_iou: dict[str, dict[str, float]] = field(default_factory=dict)  # object name -> method -> IoU (named objects)
    named_after_click: dict[str, dict[str, float]] = field(default_factory=dict)  # ... IoU after one correction
    clicks: dict[str, ClickSummary] = field(default_factory=dict)  # per method that ran the click protocol


def summarize(
    results: list[ObjectResult], methods: list[str], boundary_tolerance_px: float, corrections: int = 0
) -> Summary:
    """``corrections``: how many correction clicks the click tables report (the protocol's)."""
    if not results:
        raise ValueError("no results to summarize: the dataset selection holds no objects")
    categories = sorted({result.category for result in results}) + [ALL]
    means = {metric: {category: {} for category in categories} for metric in ("iou", "boundary_f", "outside")}
    counts: dict[str, int] = {}
    latency: dict[str, Latency] = {}
    for method in methods:
        mine = [result for result in results if result.method == method]
        for category in categories:
            selected = [result for result in mine if category in (ALL, result.category)]
            for metric, table in means.items():
                table[category][method] = float(np.mean([getattr(result, metric) for result in selected]))
            counts[category] = len(selected)
        times = [result.latency_ms for result in mine]
        stages = dict.fromkeys(stage for result in mine for stage in result.stage_ms)
        latency[method] = Latency(
            median_ms=float(np.median(times)),
            p90_ms=float(np.percentile(times, 90)),
            objects=len(mine),
            failures=sum(1 for result in mine if result.error),
            stage_median_ms={
                stage: float(np.median([r.stage_ms[stage] for r in mine if stage in r.stage_ms])) for stage in stages
            },
        )
    named_iou: dict[str, dict[str, float]] = {}
    named_after_click: dict[str, dict[str, float]] = {}
    for result in results:
        if result.name and result.method in methods:
            named_iou.setdefault(result.name, {})[result.method] = result.iou
            if result.clicks is not None and not result.clicks.refused:
                named_after_click.setdefault(result.name, {})[result.method] = result.clicks.iou_after(1)
    return Summary(
        methods=methods, categories=categories, miou=means["iou"], counts=counts, latency=latency,
        boundary_f=means["boundary_f"], outside=means["outside"], boundary_tolerance_px=boundary_tolerance_px,
        named_iou=named_iou, named_after_click=named_after_click,
        clicks=summarize_clicks(results, methods, categories, ALL, corrections) if corrections else {},
    )


def markdown(summary: Summary, notes: Sequence[str] = ()) -> str:
    """The mIoU, boundary F-score and outside-fraction tables (rows categories + all, columns
    methods), the latency table, and the IoU of each named object (the real-photo set)."""
    tolerance = f"{summary.boundary_tolerance_px:g} px"
    lines = _metric_table(summary, summary.miou, "mIoU")
    lines += [""] + _metric_table(summary, summary.boundary_f, f"boundary F-score (tolerance {tolerance})")
    lines += [""] + _metric_table(summary, summary.outside, "fraction of the mask outside the object (flooding)")
    lines += [
        "",
        "| method | median ms/object | p90 ms/object | stages (median ms) | objects | failures |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for method in summary.methods:
        timing = summary.latency[method]
        stages = ", ".join(f"{stage} {ms:.1f}" for stage, ms in timing.stage_median_ms.items()) or "-"
        lines.append(
            f"| {method} | {timing.median_ms:.1f} | {timing.p90_ms:.1f} | {stages} | {timing.objects} | {timing.failures} |"
        )
    if summary.clicks:
        lines += [""] + click_markdown(summary.clicks, summary.categories, summary.counts)
    if summary.named_iou:
        title = "IoU (→ after one correction click)" if summary.named_after_click else "IoU"
        lines += ["", f"| {title}: object | " + " | ".join(summary.methods) + " |", "|---|" + "---:|" * len(summary.methods)]
        for name, by_method in summary.named_iou.items():
            after = summary.named_after_click.get(name, {})
            cells = [
                (f"{by_method[method]:.3f}" + (f" → {after[method]:.3f}" if method in after else ""))
                if method in by_method else "-"
                for method in summary.methods
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    notes = [*notes, *click_notes(summary.clicks)]
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def _metric_table(summary: Summary, table: dict[str, dict[str, float]], title: str) -> list[str]:
    lines = [
        f"| {title}: category | objects | " + " | ".join(summary.methods) + " |",
        "|---|---:|" + "---:|" * len(summary.methods),
    ]
    for category in summary.categories:
        name = f"**{category}**" if category == ALL else category
        cells = [f"{table[category][method]:.3f}" for method in summary.methods]
        lines.append(f"| {name} | {summary.counts[category]} | " + " | ".join(cells) + " |")
    return lines


def write_metric_csv(summary: Summary, table: dict[str, dict[str, float]], path: Path) -> None:
    """One metric's table (miou, boundary_f or outside of ``summary``): rows categories + all."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["category", "objects", *summary.methods])
        for category in summary.categories:
            row = [f"{table[category][method]:.4f}" for method in summary.methods]
            writer.writerow([category, summary.counts[category], *row])


def write_latency_csv(summary: Summary, path: Path) -> None:
    """Per method: median and p90 of the whole call, failures, and each stage's median (``<stage>_median_ms``)."""
    stages = list(dict.fromkeys(stage for timing in summary.latency.values() for stage in timing.stage_median_ms))
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "median_ms", "p90_ms", "objects", "failures", *(f"{s}_median_ms" for s in stages)])
        for method in summary.methods:
            timing = summary.latency[method]
            per_stage = [f"{timing.stage_median_ms[s]:.2f}" if s in timing.stage_median_ms else "" for s in stages]
            writer.writerow(
                [method, f"{timing.median_ms:.2f}", f"{timing.p90_ms:.2f}", timing.objects, timing.failures, *per_stage]
            )


CLICK_COLUMNS = ("click_ious", "noc90", "noc90_reached", "click_ms", "clicks_refused")


def write_results_csv(results: list[ObjectResult], path: Path) -> None:
    """One row per object and method; the click protocol's outcome (when it ran) in CLICK_COLUMNS."""
    columns = [field.name for field in fields(ObjectResult) if field.name != "clicks"] + list(CLICK_COLUMNS)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for result in results:
            row = {key: value for key, value in asdict(result).items() if key != "clicks"}
            row["stage_ms"] = json.dumps(result.stage_ms)
            if result.clicks is not None:
                outcome = result.clicks
                row.update(click_ious=json.dumps([round(value, 4) for value in outcome.ious]), noc90=outcome.noc,
                           noc90_reached=outcome.reached, click_ms=json.dumps([round(ms, 1) for ms in outcome.click_ms]),
                           clicks_refused=outcome.refused)
            writer.writerow(row)


def plot_miou(summary: Summary, path: Path, title: str = "mIoU by category") -> None:
    """Grouped bar chart: one group per category and one for ALL (alone when there is a single
    category, which ALL would repeat), one bar per method."""
    groups = summary.categories if len(summary.categories) > 2 else [ALL]
    n_methods = len(summary.methods)
    positions = np.arange(len(groups))
    bar_width = 0.8 / n_methods
    figure = Figure(figsize=(max(7.0, 0.3 * n_methods * len(groups) + 3.5), 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for index, method in enumerate(summary.methods):
        values = [summary.miou[group][method] for group in groups]
        bars = axes.bar(positions + (index - (n_methods - 1) / 2) * bar_width, values, bar_width, label=method)
        if len(groups) * n_methods <= 30:  # beyond that the numbers would overlap
            axes.bar_label(bars, fmt="%.3f", fontsize=7)
    axes.set_xticks(positions, [f"{group}\n(n={summary.counts[group]})" for group in groups], fontsize=8)
    axes.set_ylim(0, 1)
    axes.set_ylabel("mIoU")
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars reach 1.0
    figure.tight_layout()
    figure.savefig(path, dpi=120)


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    miou_csv: Path
    boundary_csv: Path
    outside_csv: Path
    latency_csv: Path
    results_csv: Path
    chart: Path
    clicks_csv: Path | None = None  # when the click protocol ran


def write_report(
    summary: Summary, results: list[ObjectResult], out_dir: Path, notes: Sequence[str] = ()
) -> ReportFiles:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(
        markdown=out_dir / "report.md",
        miou_csv=out_dir / "miou.csv",
        boundary_csv=out_dir / "boundary_f.csv",
        outside_csv=out_dir / "outside.csv",
        latency_csv=out_dir / "latency.csv",
        results_csv=out_dir / "per_object.csv",
        chart=out_dir / "miou_by_category.png",
    )
    files.markdown.write_text(markdown(summary, notes))
    write_metric_csv(summary, summary.miou, files.miou_csv)
    write_metric_csv(summary, summary.boundary_f, files.boundary_csv)
    write_metric_csv(summary, summary.outside, files.outside_csv)
    write_latency_csv(summary, files.latency_csv)
    write_results_csv(results, files.results_csv)
    plot_miou(summary, files.chart)
    if summary.clicks:
        files = replace(files, clicks_csv=out_dir / "clicks.csv")
        write_clicks_csv(summary.clicks, files.clicks_csv)
    return files
