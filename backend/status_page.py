"""``GET /``: a small HTML page saying what this backend process serves and does, for people
(Label Studio never asks for it). Behind the same Basic Auth as every route; it shows no secrets.

``collect`` gathers the figures into sections — a section is a dict (one value per row) or a list
of dicts (a table) — and ``render`` turns them into HTML. A new figure is one more key in
``collect``; a component that has a ``stats() -> dict`` method shows up under "Caches" as it is.
"""

from __future__ import annotations

import functools
import html
import os
import time

from backend.active_learning.learned_policies import describe
from backend.jobs.store import outcome_summary
from backend.label_studio_check import NOT_CONFIGURED, OK
from backend.labeling import LabelingConfig, LabelingError
from backend.routing import tools_not_served
from backend.urls import redact

RECENT_JOBS = 10
PROJECTS_SHOWN = 50
REFRESH_S = 10


def collect(model, images, label_studio, jobs=None, started_at: float | None = None,
            embed_ahead=None) -> dict[str, dict | list]:
    """The page's sections. ``model``: the app's ``SegmentationModel``; ``images``: its image loader;
    ``label_studio``: a ``LabelStudioCheck``; ``jobs``: the ``JobStore`` or None;
    ``embed_ahead``: the ``EmbedAhead`` whose queue of images to embed is shown, or None."""
    segmenters = model.segmenters
    settings = model.settings
    return {
        "Models": {
            "model version (default)": model.model_version_for(),
            **{f"{name}": status for name, status in segmenters.status.items()},
        },
        "Devices": _devices(settings),
        "Label Studio": _label_studio(settings, label_studio.status(wait_s=0)),
        "Projects seen": _projects(model),
        "Recent jobs": _jobs(jobs) if jobs is not None else [],
        "Caches": _caches({"decoded images": images, "SAM embeddings": getattr(segmenters, "embeddings", None)}),
        "Embedding ahead": {"queued images": embed_ahead.queue.depth()} if embed_ahead is not None else {"queued images": "not in use"},
        "Process": {"pid": os.getpid(), "up for": _duration(time.time() - started_at) if started_at else "?",
                    "MODEL_DIR": str(settings.model_dir)},
    }


def _label_studio(settings, connection: str) -> dict:
    """The connection as ``LabelStudioCheck`` tells it, the variables that set it up, and what an
    answer other than "ok" costs (no secret: only whether the token is set)."""
    if connection == OK:
        meaning = "images from Label Studio, retraining and pre-annotation can reach it"
    elif connection == NOT_CONFIGURED:
        meaning = ("LABEL_STUDIO_URL is not set: images uploaded to Label Studio (/data/upload/…), local files and "
                   "cloud storage cannot be downloaded, and retraining and pre-annotation cannot read or write tasks")
    elif connection.startswith("error"):
        meaning = ("the backend cannot use Label Studio until this is fixed (the message says what to change): "
                   "images served by Label Studio fail to load, retraining and pre-annotation fail")
    else:
        meaning = "the first check is running"
    return {
        "url": redact(settings.label_studio_url) if settings.label_studio_url else "(not set)",
        "connection": connection,
        "what it means": meaning,
        "set with": ("LABEL_STUDIO_URL: the address the backend reaches Label Studio at (e.g. http://localhost:8080); "
                     "LABEL_STUDIO_API_KEY: a Personal Access Token (Label Studio → Account & Settings → "
                     "Personal Access Token; legacy tokens are off by default in 1.23)"),
        "LABEL_STUDIO_API_KEY": "set" if settings.label_studio_api_key else "not set",
    }


def _devices(settings) -> dict:
    import torch

    device = settings.resolved_device()
    devices = {"device": device, "torch": torch.__version__, "torch threads": torch.get_num_threads(),
               "CPU cores": os.cpu_count()}
    if device.startswith("cuda"):
        devices["GPU"] = torch.cuda.get_device_name(torch.device(device))
    return devices


def _projects(model) -> list[dict]:
    rows = []
    proposals = model.proposals_overview(PROJECTS_SHOWN)
    for setup in model.store.list()[:PROJECTS_SHOWN]:
        try:
            config = _parsed(setup.label_config, model.settings.extreme_tool_prefix)
            tools = ", ".join(f"{tool.name} ({tool.kind.value})" for tool in config.tools.values())
            not_served = "; ".join(f"{name}: {why}" for name, why in tools_not_served(
                config, model.segmenters, model.settings.extreme_tool_prefix).items())
        except LabelingError as exc:  # stored before a config rule changed
            tools, not_served = "", f"labeling config no longer accepted: {exc}"
        learned = describe(model.serving_for(setup.project_id)[1])
        rows.append({"project": setup.project_id, "last /setup": _time(setup.updated_at),
                     "model version": model.model_version_for(setup.project_id), "learned policies": learned,
                     "prompt tools": tools,
                     "tools not served": not_served or "none", "proposals": proposals.get(setup.project_id, "off")})
    return rows


@functools.lru_cache(maxsize=PROJECTS_SHOWN)
def _parsed(xml: str, extreme_tool_prefix: str) -> LabelingConfig:
    """Its own cache, not /predict's (``labeling.parse_label_config``): a page of many projects must not
    evict the configs being served, and parsing a large config takes seconds."""
    return LabelingConfig.parse(xml, extreme_tool_prefix)


def _jobs(jobs) -> list[dict]:
    rows = []
    for job in reversed(jobs.list()[-RECENT_JOBS:]):
        progress = job.progress or {}
        rows.append({"job": job.id, "type": job.kind, "project": job.project, "state": job.state,
                     "progress": f"{100 * progress.get('fraction', 0):.0f}% {progress.get('message', '')}".strip(),
                     "outcome": outcome_summary(job), "queued": _time(job.created_at), "trigger": job.trigger})
    return rows


def _caches(components: dict) -> list[dict]:
    rows = []
    for name, component in components.items():
        if component is None:
            rows.append({"cache": name, "entries": "not in use"})
        elif callable(getattr(component, "stats", None)):
            stats = {key: _bytes(value) if key in _BYTE_FIGURES and isinstance(value, int) else value
                     for key, value in component.stats().items()}
            rows.append({"cache": name, **stats})
        else:
            rows.append({"cache": name, "entries": "no figures reported"})
    return rows


# Figures of a cache's stats() that count bytes (/health keeps them raw; people read binary units).
_BYTE_FIGURES = ("bytes", "capacity", "max_bytes")


def _bytes(count: int) -> str:
    """1536 -> "1.5 KiB", 268435456 -> "256 MiB"."""
    value, unit = float(count), "B"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024:
            break
        value, unit = value / 1024, larger
    return f"{count} B" if unit == "B" else f"{value:.1f}".removesuffix(".0") + f" {unit}"


def _time(timestamp) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp)) if timestamp else ""


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s"


def render(sections: dict[str, dict | list]) -> str:
    """The HTML page of ``sections`` (every value escaped)."""
    body = []
    for title, section in sections.items():
        body.append(f"<h2>{_esc(title)}</h2>")
        if isinstance(section, dict):
            body.append("<table>" + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in section.items())
                        + "</table>")
        elif not section:
            body.append("<p>none</p>")
        else:
            columns = list(dict.fromkeys(key for row in section for key in row))
            head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
            rows = "".join("<tr>" + "".join(f"<td>{_esc(row.get(c, ''))}</td>" for c in columns) + "</tr>"
                           for row in section)
            body.append(f"<table><tr>{head}</tr>{rows}</table>")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_S}">
<title>Segmentation backend status</title>
<style>body{{font-family:sans-serif;margin:1.5em;color:#222}} table{{border-collapse:collapse;margin-bottom:1em}}
th,td{{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}} th{{background:#f3f3f3}}</style>
</head><body><h1>Segmentation backend for Label Studio</h1>
<p>Refreshes every {REFRESH_S} s. JSON: <a href="/health">/health</a>, <a href="/jobs">/jobs</a>,
<a href="/versions">/versions</a>.</p>
{"".join(body)}
</body></html>
"""


def _esc(value) -> str:
    if isinstance(value, dict):  # e.g. a queue's depth per priority
        value = ", ".join(f"{key} {item}" for key, item in value.items())
    return html.escape("" if value is None else str(value))
