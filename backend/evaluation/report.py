"""Tables and chart of an evaluation: per-category mIoU (markdown, CSV, grouped bar chart PNG),
latency per method, and the raw per-object results."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from backend.evaluation.harness import ObjectResult

ALL = "all"  # the row/group of every object together (mean over objects, not over categories)


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p90_ms: float
    objects: int
    failures: int


@dataclass(frozen=True)
class Summary:
    """methods in column order; categories sorted, then ALL; miou[category][method]."""

    methods: list[str]
    categories: list[str]
    miou: dict[str, dict[str, float]]
    counts: dict[str, int]
    latency: dict[str, Latency]


def summarize(results: list[ObjectResult], methods: list[str]) -> Summary:
    if not results:
        raise ValueError("no results to summarize: the dataset selection holds no objects")
    categories = sorted({result.category for result in results}) + [ALL]
    miou: dict[str, dict[str, float]] = {category: {} for category in categories}
    counts: dict[str, int] = {}
    latency: dict[str, Latency] = {}
    for method in methods:
        mine = [result for result in results if result.method == method]
        for category in categories:
            ious = [result.iou for result in mine if category in (ALL, result.category)]
            miou[category][method] = float(np.mean(ious))
            counts[category] = len(ious)
        times = [result.latency_ms for result in mine]
        latency[method] = Latency(
            median_ms=float(np.median(times)),
            p90_ms=float(np.percentile(times, 90)),
            objects=len(mine),
            failures=sum(1 for result in mine if result.error),
        )
    return Summary(methods=methods, categories=categories, miou=miou, counts=counts, latency=latency)


def markdown(summary: Summary, notes: Sequence[str] = ()) -> str:
    """The mIoU table (rows categories + all, columns methods) and the latency table."""
    lines = [
        "| category | objects | " + " | ".join(summary.methods) + " |",
        "|---|---:|" + "---:|" * len(summary.methods),
    ]
    for category in summary.categories:
        name = f"**{category}**" if category == ALL else category
        cells = [f"{summary.miou[category][method]:.3f}" for method in summary.methods]
        lines.append(f"| {name} | {summary.counts[category]} | " + " | ".join(cells) + " |")
    lines += ["", "| method | median ms/object | p90 ms/object | objects | failures |", "|---|---:|---:|---:|---:|"]
    for method in summary.methods:
        timing = summary.latency[method]
        lines.append(
            f"| {method} | {timing.median_ms:.1f} | {timing.p90_ms:.1f} | {timing.objects} | {timing.failures} |"
        )
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def write_miou_csv(summary: Summary, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["category", "objects", *summary.methods])
        for category in summary.categories:
            row = [f"{summary.miou[category][method]:.4f}" for method in summary.methods]
            writer.writerow([category, summary.counts[category], *row])


def write_latency_csv(summary: Summary, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "median_ms", "p90_ms", "objects", "failures"])
        for method in summary.methods:
            timing = summary.latency[method]
            writer.writerow(
                [method, f"{timing.median_ms:.2f}", f"{timing.p90_ms:.2f}", timing.objects, timing.failures]
            )


def write_results_csv(results: list[ObjectResult], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[field.name for field in fields(ObjectResult)])
        writer.writeheader()
        writer.writerows(asdict(result) for result in results)


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
    latency_csv: Path
    results_csv: Path
    chart: Path


def write_report(
    summary: Summary, results: list[ObjectResult], out_dir: Path, notes: Sequence[str] = ()
) -> ReportFiles:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(
        markdown=out_dir / "report.md",
        miou_csv=out_dir / "miou.csv",
        latency_csv=out_dir / "latency.csv",
        results_csv=out_dir / "per_object.csv",
        chart=out_dir / "miou_by_category.png",
    )
    files.markdown.write_text(markdown(summary, notes))
    write_miou_csv(summary, files.miou_csv)
    write_latency_csv(summary, files.latency_csv)
    write_results_csv(results, files.results_csv)
    plot_miou(summary, files.chart)
    return files
