"""The model Label Studio talks to: ``setup``, ``predict`` and ``fit``, the familiar ML-backend shape.

``predict`` answers both Label Studio calls:

- **interactive** (``params.context`` present): the smart-tool regions in the context are the
  prompts; the answer is one entry whose ``result`` holds a mask region per prompt (a brush mask,
  or a polygon per part of the mask: ``backend.mask_output``). Pending point
  groups (1-3 extreme points, only negative clicks) get no mask and no error. Unusable prompts
  (unknown label, outside the image, zero-area box) and prompts no loaded segmenter answers come
  back as drawn, with the reason as the region's note (``backend.labeling_page``: Label Studio
  1.23's labeling page shows nothing of an error answer), beside the other prompts' masks. A context ``{"event": "prewarm"}`` (newer
  labeling pages, when a task opens) is answered at once with no regions and queues the task's
  SAM embedding first; every interactive call also queues the project's next tasks' embeddings
  (``backend.embeddings.ahead``).
- **batch** (no context): the rectangles and keypoints in each task's own predictions and
  annotations are the prompts. One entry per task, in order. A task that yields no mask (no
  prompts, image not loadable, every prompt unusable) gets an empty list entry: Label Studio then
  stores nothing for it and asks again next time, whereas a stored empty prediction would block
  re-prediction for this model version. Unusable prompts in a task are skipped (and logged); the
  others still get masks. One failing task never loses the others, and a batch that would outlast
  Label Studio's 100 s timeout stops after ``PREDICT_BUDGET_S`` with empty entries for the rest.
  ``batch_prediction`` is this path for one task; pre-annotation jobs (``backend.preannotation``) call
  it too, so a job's masks are exactly what "Retrieve predictions" would store.
  With the project option ``proposals`` on and a proposal model trained for the project, the objects
  it finds become prompts too (``backend.proposal_masks``): a task without prompts gets their masks,
  and a task with prompts gets them for the objects no prompt covers (never a second region for one
  object).

Interactive merging (policy ``merge_overlapping``) joins a new mask with the masks already on the
annotator's screen that Label Studio tells the backend about: brush and polygon regions in the context and in
the annotator's latest draft of the task (Label Studio autosaves drafts and sends only the
requesting user's). Submitted annotations are not used, since the request does not say which one
is open. The merged mask comes back with the id of the region it absorbed, so the page replaces
that region (``backend.labeling_page``, which also shapes the rest of the interactive answer for
the page: extreme points stay on screen until their object's mask arrives).

Correction clicks: each process remembers, per task, the extreme-point and rectangle objects it
answered (``backend.known_objects``), so a click that arrives alone after the page accepted a mask
(and deleted its points) still refines that object (``backend.routing``); the refined mask keeps
the region id of the mask it refines, and is never merged with that mask itself by a merging
policy; the extreme-point model's answer to one new click only adds (positive) or only removes
(negative) pixels of the mask it refines (``backend.correction_masks``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import numpy as np

from backend.labeling import LabelingConfig, MaskKind, parse_label_config
from backend.labeling_page import page_answer, unserved_echoes, without_kept_points
from backend.images import ImageBusy, ImageError
from backend.correction_masks import AnsweredMask, follow_correction
from backend.known_objects import RecentObjects, region_reference
from backend.mask_output import MaskOutput
from backend.policies import WILDCARD, PolicySet, keep_largest
from backend.proposal_masks import proposal_masks
from backend.project_options import OptionError, ProjectOptions, json_object
from backend.project_store import ProjectSetup, ProjectStore, project_id
from backend.prompts import Prompt, PromptError, Segmentation
from backend.protocol import RegionError, mask_from_region, task_entry
from backend.request_shapes import ShapeError, check_context, check_task, valid_task
from backend.routing import Routed, RoutingError, choose_segmenter, has_prompt_regions, prompts_from_regions, \
    prompts_from_task, task_sources, tools_not_served
from backend.segmenter_set import SegmenterSet
from backend.settings import Settings

log = logging.getLogger(__name__)

# Newer labeling pages send this context when a task opens, before any prompt.
PREWARM = "prewarm"

# Every model version this backend gives starts so (``extreme_version_of`` reads one back).
MODEL_VERSION_PREFIX = "segassist-"


class RequestError(ValueError):
    """Input the backend cannot serve; ``status`` is the HTTP status to answer with. ``transient``:
    Label Studio did not serve the task's image now (``ImageError.transient``); later it may."""

    def __init__(self, message: str, status: int = 400, transient: bool = False):
        super().__init__(message)
        self.status = status
        self.transient = transient


@dataclass(frozen=True)
class ProjectContext:
    """What serving one project takes, resolved once per request (or per pre-annotation chunk)."""

    config: LabelingConfig
    options: ProjectOptions  # the server default's and the project's
    segmenters: SegmenterSet
    version: str  # the model version /setup answers and every prediction carries
    output: MaskOutput  # brush masks or polygons
    # The project's proposal model (backend.proposals.ProposalModel) when the option "proposals" is on and
    # one was trained; else None, and ``proposals_note`` says why.
    proposer: object | None = None
    proposals_note: str = ""


@dataclass(frozen=True)
class BatchPrediction:
    """One task's batch prediction: the entry ({"result", "score", "model_version"}), or None when no
    mask came out (no prompts, or none usable); ``skipped`` says which prompts were left out and why;
    ``empty_because`` why there is no entry ("" when there is one); ``nothing_found``: the task had no
    prompt and the proposal model found no object (an answer, not a failure)."""

    entry: dict | None
    skipped: list[str]
    empty_because: str = ""
    nothing_found: bool = False


class SegmentationModel:
    def __init__(self, settings: Settings, segmenters: SegmenterSet, images, store: ProjectStore, webhooks=None,
                 project_models=None, embed_ahead=None, known_objects: RecentObjects | None = None):
        """``images``: an ``ImageLoader`` (``load(url, task_id) -> LoadedImage``, raising ``ImageError``).
        ``project_models``: per-project extreme-point versions (``active_learning.serving.ProjectModels``),
        or None to serve ``segmenters.extreme`` to every project. ``embed_ahead``: SAM embeddings ahead
        of the annotator (``backend.embeddings.ahead.EmbedAhead``), or None (no SAM). ``webhooks``: where
        ``fit`` hands events (``backend.webhooks.Webhooks``), or None in a job's process.
        ``known_objects``: the objects answered per task, for correction clicks (a new store if None)."""
        self.settings = settings
        self.embed_ahead = embed_ahead
        self.segmenters = segmenters
        self.project_models = project_models
        self.images = images
        self.store = store
        self.webhooks = webhooks
        self.known_objects = known_objects or RecentObjects()

    # -- versions -------------------------------------------------------------------------------

    def model_version_for(self, project_ref: str | None = None) -> str:
        """The model version answered by /setup and put on every prediction of the project:
        ``segassist-<extreme model version or noextreme>+<sam-<type> or nosam>``, where the extreme
        model version is the project's own (active learning) when there is one."""
        return _version_of(self.segmenters_for(project_ref))

    def segmenters_for(self, project_ref: str | None = None) -> SegmenterSet:
        """The segmenters serving a project: with active learning, its current extreme-point version."""
        return self.serving_for(project_ref)[0]

    def serving_for(self, project_ref: str | None = None) -> tuple[SegmenterSet, dict]:
        """``segmenters_for``, and the policies its extreme-point version learned from the project's
        annotations ({label: {policy key: value}}; none for the default weights)."""
        if self.project_models is None or project_ref is None:
            return self.segmenters, {}
        extreme, version = self.project_models.segmenter_for(project_id(project_ref))
        return replace(self.segmenters, extreme=extreme, extreme_version=version.name), version.policies

    def versions(self, project_ref: str | None = None) -> dict:
        """``/versions``: every model version the project's predictions may carry (every project's when
        None), oldest first, and with active learning each extreme-point version's record."""
        if self.project_models is None:
            return {"versions": [self.model_version_for(project_ref)]}
        pid = None if project_ref is None else project_id(project_ref)
        records = self.project_models.registry.versions(pid)
        names = [_version_of(replace(self.segmenters, extreme_version=r.name)) for r in records]
        return {"versions": list(dict.fromkeys(names)),
                "details": [{"model_version": n, **r.to_json()} for n, r in zip(names, records)]}

    # -- setup ----------------------------------------------------------------------------------

    def setup(self, project_ref, label_config, extra_params) -> dict:
        """Validates and stores what Label Studio tells about a project; returns the /setup answer:
        ``model_version``, and ``tools_not_served`` (tool name -> why) for prompt tools of the config
        that no loaded segmenter can answer (also logged; Label Studio reads only the version).
        Raises ProjectIdError, LabelingError or OptionError with a message for the user."""
        pid = project_id(project_ref)
        config = parse_label_config(label_config, self.settings.extreme_tool_prefix)
        params = json_object(extra_params, "extra params")
        options = ProjectOptions.parse(params, "extra params")
        unknown = sorted(options.policies.labels - {WILDCARD} - config.mask_labels)
        if unknown:
            raise OptionError(f"extra params: policies for unknown label(s) {', '.join(unknown)} "
                              f"(mask labels: {', '.join(sorted(config.mask_labels))})")
        version = self.model_version_for(pid)
        self.store.save(ProjectSetup(pid, label_config, params, version))
        not_served = tools_not_served(config, self.segmenters, self.settings.extreme_tool_prefix)
        for tool, reason in not_served.items():
            log.warning("project %s: tool %s cannot be served: %s", pid, tool, reason)
        return {"model_version": version, "tools_not_served": not_served}

    # -- predict --------------------------------------------------------------------------------

    def project_context(self, project_ref, label_config: str | None = None) -> ProjectContext:
        """What serving ``project_ref`` takes: its labeling config (``label_config``, else the one its
        /setup stored), policies, segmenters and model version. Raises RequestError without a config,
        LabelingError for a bad one."""
        pid = project_id(project_ref)
        stored = self.store.load(pid)
        if not label_config:
            if stored is None:
                raise RequestError(f"no label_config in the request and no /setup seen for project {pid}")
            label_config = stored.label_config
        segmenters, learned = self.serving_for(pid)
        options = ProjectOptions.for_project(self.settings.default_options, stored, learned)
        proposer, note = self.proposer_for(pid, options)
        return ProjectContext(
            config=parse_label_config(label_config, self.settings.extreme_tool_prefix),
            options=options, segmenters=segmenters, version=_version_of(segmenters),
            output=MaskOutput(options.mask_type, options.polygon_tolerance_px), proposer=proposer, proposals_note=note)

    def proposer_for(self, pid: str, options: ProjectOptions) -> tuple[object | None, str]:
        """The project's proposal model, or None and why there is none."""
        if not options.proposals:
            return None, "proposals are off for the project (extra param \"proposals\": true turns them on)"
        if self.project_models is None:
            return None, "proposals need per-project models (background work), which this process does not run"
        proposer, _ = self.project_models.proposer_for(pid)
        return (proposer, "") if proposer is not None else (None, self.proposals_status(pid))

    def proposals_overview(self, limit: int = 50) -> dict[str, str]:
        """Project id -> ``proposals_status`` for the projects (of the first ``limit`` seen) with
        proposals on (``/health``, the status page)."""
        overview = {}
        for setup in self.store.list()[:limit]:
            try:
                on = ProjectOptions.for_project(self.settings.default_options, setup).proposals
            except OptionError:  # stored before an option changed: /setup says so when it comes again
                continue
            if on:
                overview[setup.project_id] = self.proposals_status(setup.project_id)
        return overview

    def proposals_status(self, project_ref) -> str:
        """The project's proposal model in one line: which version serves it, or why there is none yet
        (cold start: how many more annotated tasks a training job needs)."""
        pid = project_id(project_ref)
        if self.project_models is None:
            return "not available: this process serves no per-project models"
        status = self.project_models.proposals_status(pid)
        if status.get("serving"):
            threshold = ProjectOptions.for_project(self.settings.default_options, self.store.load(pid)).proposal_threshold
            shown = f"{threshold:g} (extra param)" if threshold is not None else f"{status.get('threshold') or 0:.3g}"
            return f"from {status['serving']}, threshold {shown}" + (f"; last training: {status['message']}"
                                                                     if status.get("message") else "")
        if status.get("message"):
            return f"no proposal model yet: {status['message']}"
        return (f"no proposal model yet: a training job trains one from at least {self.settings.proposals_min_tasks} "
                "annotated tasks (PROPOSALS_MIN_TASKS)")

    def predict(self, tasks: list, project_ref, label_config: str | None, context: dict | None) -> list:
        """One entry per task (see the module docstring)."""
        project = self.project_context(project_ref, label_config)
        if context is not None:
            if len(tasks) != 1:
                raise RequestError(f"an interactive request carries one task, got {len(tasks)}")
            prewarm = isinstance(context, dict) and context.get("event") == PREWARM
            try:
                check_task(tasks[0], "tasks[0]")
                if not prewarm:
                    check_context(context)
            except ShapeError as exc:
                raise RequestError(str(exc)) from None
            if prewarm:
                return [self._prewarm(tasks[0], project_ref, project)]
            if self.embed_ahead is not None:
                self.embed_ahead.working_on(project_id(project_ref), tasks[0].get("id"), project.config.image_key)
            return [self._interactive(tasks[0], context, project_ref, project)]
        return self._batch(tasks, project)

    def _prewarm(self, task: dict, project_ref, project: ProjectContext) -> dict:
        """A labeling page opened ``task``: an empty answer at once; its image's embedding is queued
        first, and the project's next tasks after it."""
        if self.embed_ahead is not None:
            pid = project_id(project_ref)
            self.embed_ahead.prewarm(pid, task, project.config.image_key)
            self.embed_ahead.working_on(pid, task.get("id"), project.config.image_key)
        return task_entry([], project.version)

    def _batch(self, tasks: list, project: ProjectContext) -> list:
        """Entries for every task, in order, within ``settings.predict_budget_s``: once it is spent no
        new task starts (the first always does), and the rest get empty entries, which Label Studio
        asks for again on its next call."""
        deadline = time.monotonic() + self.settings.predict_budget_s
        entries = []
        for index, task in enumerate(tasks):
            if index and time.monotonic() > deadline:
                log.warning("predict budget of %g s (PREDICT_BUDGET_S) spent: %d of %d tasks left for the next "
                            "call", self.settings.predict_budget_s, len(tasks) - index, len(tasks))
                return entries + [[] for _ in tasks[index:]]
            entries.append(self._batch_entry(task, project))
        return entries

    def _batch_entry(self, task: dict, project: ProjectContext) -> dict | list:
        """``batch_prediction`` as a /predict entry: [] when there is no mask, whatever the reason
        (logged), so one broken task never loses the batch."""
        task_id = task.get("id") if isinstance(task, dict) else None
        try:
            prediction = self.batch_prediction(task, project)
        except (RequestError, ShapeError) as exc:
            log.warning("task %s: no prediction stored: %s", task_id, exc)
            return []
        except Exception:
            log.exception("task %s: prediction failed, no prediction stored", task_id)
            return []
        for note in prediction.skipped:
            log.warning("task %s: %s", task_id, note)
        if prediction.entry is None:
            log.info("task %s: no prediction stored: %s", task_id, prediction.empty_because)
        return prediction.entry or []

    def batch_prediction(self, task: dict, project: ProjectContext) -> BatchPrediction:
        """The masks for the rectangles and keypoints in a task's own predictions and annotations: the
        batch /predict path, also taken by pre-annotation jobs. Unusable prompts are skipped and said so
        in ``skipped``, as are malformed regions. Raises ShapeError for a malformed task, RequestError
        when the task has more prompts than MAX_PROMPT_REGIONS or its image cannot be loaded."""
        task, malformed = valid_task(task, "task")
        malformed = [f"skipped a malformed region: {problem}" for problem in malformed]
        has_prompts = has_prompt_regions(task, project.config)
        if not has_prompts and project.proposer is None:
            tools = ", ".join(project.config.tools)
            note = f"; proposals: {project.proposals_note}" if project.options.proposals else ""
            return BatchPrediction(None, malformed, f"no prompt in its predictions or annotations (regions of {tools})"
                                                    + note)
        self._check_prompt_count([r for source in task_sources(task) for r in source], project.config)
        image = self._load_image(task, project.config)
        routed = prompts_from_task(task, project.config, image.width, image.height)
        skipped = malformed + [f"skipped a prompt: {error}" for error in routed.errors]
        segmentations = []
        for prompt in routed.prompts:
            try:
                segmentations.append(self._segment(image, prompt, project.segmenters))
            except (RoutingError, PromptError) as exc:
                skipped.append(f"skipped a {prompt.kind.value} prompt: {exc}")
        proposed = 0
        if project.proposer is not None:
            found = self._proposal_masks(image, [s.mask for s in segmentations], project)
            segmentations += found.segmentations
            skipped += found.notes
            proposed = len(found.segmentations)
        applied = project.options.policies.apply(segmentations)
        entry, _, _ = self._entry([a.segmentation for a in applied], routed, project)
        if entry["result"]:
            return BatchPrediction(entry, skipped)
        if not has_prompts and not proposed:
            return BatchPrediction(None, skipped, "no prompt, and the proposal model found no object above its "
                                                  "threshold", nothing_found=True)
        if segmentations:
            why = "every mask came out empty after the project's policies"
        elif routed.pending and not skipped:
            why = "unfinished prompts: " + "; ".join(routed.pending)
        else:
            why = "no prompt was usable (the warnings before say why)"
        return BatchPrediction(None, skipped, why)

    def _proposal_masks(self, image, taken: list[np.ndarray], project: ProjectContext):
        """The masks of the objects the project's proposal model finds in ``image`` that no mask in
        ``taken`` covers (``backend.proposal_masks``). A label whose masks become polygons keeps its
        largest part, so that an object is one region."""
        proposals = project.proposer.propose(image, threshold=project.options.proposal_threshold,
                                             max_objects=self.settings.proposals_max_objects)
        found = proposal_masks(proposals, lambda prompt: self._segment(image, prompt, project.segmenters),
                               project.segmenters, project.config.mask_tools_for_label, taken,
                               lambda proposal, mask: project.proposer.relabelled(proposal, image.array, mask))
        for index, segmentation in enumerate(found.segmentations):
            if project.config.mask_tool(segmentation.label, project.output.preferred).kind is MaskKind.POLYGON:
                found.segmentations[index] = replace(segmentation, mask=keep_largest(segmentation.mask))
        return found

    def _interactive(self, task: dict, context: dict, project_ref, project: ProjectContext) -> dict:
        """The answer to a smart tool, shaped for the labeling page (``backend.labeling_page``)."""
        config, policies, version = project.config, project.options.policies, project.version
        regions = without_kept_points(context["result"])
        if not any(r.get("from_name") in config.tools for r in regions):
            return task_entry([], version)
        self._check_prompt_count(regions, config)
        image = self._load_image(task, config)
        _warn_on_other_size(task, regions, config, image)
        task_key = _task_key(project_ref, task)
        known = self.known_objects.of_task(task_key) if task_key else []
        routed = prompts_from_regions(regions, config, image.width, image.height, known)
        unserved = list(zip(routed.error_regions, routed.errors))
        segmentations, served = [], []
        limit = self.settings.max_prompt_regions
        for prompt, group, obj in zip(routed.prompts, routed.prompt_regions, routed.objects):
            if len(prompt.points) > limit:  # remembered corrections are not in the request's count
                unserved.append((group, f"{len(prompt.points)} points and correction clicks on one object, over "
                                        f"the limit of {limit} (MAX_PROMPT_REGIONS): draw the object again"))
                continue
            try:
                choice = choose_segmenter(prompt, project.segmenters)
                segmentation = self._segment(image, prompt, project.segmenters, choice)
                by_extreme = choice[0] is project.segmenters.extreme  # SAM refines from its own logits instead
                if obj is not None and by_extreme:
                    segmentation = replace(segmentation, mask=follow_correction(segmentation.mask, obj.answer,
                                                                                obj.clicks))
                segmentations.append(segmentation)
                served.append((prompt, group, obj, by_extreme))
            except (RoutingError, PromptError) as exc:
                unserved.append((group, str(exc)))
        for _, reason in unserved:
            log.warning("task %s: prompt not served: %s", task.get("id"), reason)
        routed = replace(routed, prompts=[prompt for prompt, _, _, _ in served],
                         prompt_regions=[group for _, group, _, _ in served],
                         objects=[obj for _, _, obj, _ in served])
        # A refined object's earlier mask is replaced, not merged with its own refinement.
        refined = {mask.get("id") for obj in routed.objects if obj is not None for mask in obj.mask_regions}
        on_screen = self._masks_on_screen(task, regions, config, policies, image.width, image.height, refined)
        screen_masks = {label: [mask for _, mask in pairs] for label, pairs in on_screen.items()}
        applied = policies.apply(segmentations, screen_masks)
        entry, covered, parents = self._entry([a.segmentation for a in applied], routed, project)
        answer = page_answer(entry["result"], covered, parents, applied, routed, on_screen,
                             project.options.keep_extreme_points)
        if task_key:
            masks = [region for region in answer if region.get("from_name") in config.mask_tools
                     and not region.get("dynamic")]
            absorbed = {on_screen[a.segmentation.label][index][0]["id"] for a in applied for index in a.absorbed}
            self._remember(task_key, routed, applied, parents, masks, [k for k in known if absorbed.intersection(
                mask.get("id") for mask in k.mask_regions)], [by_extreme for _, _, _, by_extreme in served])
        entry["result"] = answer + unserved_echoes(unserved)
        return entry

    def _remember(self, task_key: tuple, routed: Routed, applied: list, parents: list[int],
                  masks: list[dict], merged_away: list, by_extreme: list[bool]) -> None:
        """Records the EXTREME and BOX objects just answered, with their mask regions (``masks``: the
        answer's mask regions, one per entry of ``parents``), for correction clicks to come
        (``backend.known_objects``), and the answered mask where the extreme-point model answered
        (``by_extreme``, per prompt: its next correction merges with it). An object merged with other
        masks is forgotten, as are the known objects whose masks a merge absorbed (``merged_away``):
        their region is no longer their own mask."""
        regions_of: dict[int, list[dict]] = {}
        for region, parent in zip(masks, parents):
            regions_of.setdefault(parent, []).append(region_reference(region))
        answered, forgotten = [], list(merged_away)
        for index, result in enumerate(applied):
            objects = [routed.objects[s] for s in result.sources if routed.objects[s] is not None]
            objects = [obj for obj in objects if None not in obj.anchor_ids]
            if len(result.sources) == 1 and not result.absorbed:
                answered += [replace(obj, mask_regions=tuple(regions_of.get(index, [])),
                                     answer=AnsweredMask.of(result.segmentation.mask,
                                                            [click.region_id for click in obj.clicks])
                                     if by_extreme[result.sources[0]] else None)
                             for obj in objects]
            else:
                forgotten += objects
        self.known_objects.remember(task_key, answered, forgotten)

    def _check_prompt_count(self, regions: list[dict], config: LabelingConfig) -> None:
        """RequestError (422) when ``regions`` hold more prompt regions than MAX_PROMPT_REGIONS: the
        work per request is bounded (each prompt is a model run, each click grows SAM's input)."""
        count = sum(1 for region in regions if region.get("from_name") in config.tools)
        limit = self.settings.max_prompt_regions
        if count > limit:
            raise RequestError(f"{count} prompt regions (boxes, clicks, extreme points) in one task, over the "
                               f"limit of {limit} (MAX_PROMPT_REGIONS)", 422)

    def _load_image(self, task: dict, config: LabelingConfig):
        """The task's LoadedImage; RequestError (422) saying why when it cannot be loaded."""
        data = task.get("data")
        url = data.get(config.image_key) if isinstance(data, dict) else None
        if not isinstance(url, str) or not url:
            raise RequestError(f'task data has no image URL under "{config.image_key}" '
                               f'(from <Image value="${config.image_key}">)', 422)
        task_id = task.get("id") if isinstance(task.get("id"), int) else None
        try:
            return self.images.load(url, task_id=task_id)
        except ImageBusy as exc:
            raise RequestError(f"image not loaded: {exc}", 503, transient=exc.transient) from None
        except ImageError as exc:
            log.warning("task %s: image not loaded: %s", task_id, exc.detail)
            raise RequestError(f"image not loaded: {exc}", 422, transient=exc.transient) from None

    def _segment(self, image, prompt: Prompt, segmenters: SegmenterSet,
                 choice: tuple | None = None) -> Segmentation:
        """``prompt``'s segmentation by the segmenter ``choice`` (``choose_segmenter``'s answer, routed here when None)."""
        segmenter, note = choice or choose_segmenter(prompt, segmenters)
        segmentation = segmenter.segment(image, prompt)
        if segmentation.mask.shape != (image.height, image.width):
            raise RuntimeError(f"{segmentation.model} returned a {segmentation.mask.shape} mask for a "
                               f"{image.height} x {image.width} image")
        model = f"{segmentation.model} ({note})" if note else segmentation.model
        return replace(segmentation, label=prompt.label, model=model)

    def _masks_on_screen(self, task: dict, context_regions: list, config: LabelingConfig, policies: PolicySet,
                         width: int, height: int, leaving: set = frozenset()) -> dict[str, list[tuple[dict, np.ndarray]]]:
        """label -> (region, bool mask) of the masks (brush or polygon) on the annotator's screen
        (context and latest draft), only for labels that merge, but for those whose ids are ``leaving``."""
        merging = {label for label in config.mask_labels if policies.for_label(label).merge_overlapping}
        if not merging:
            return {}
        drafts = [d for d in task.get("drafts") or [] if isinstance(d, dict) and isinstance(d.get("result"), list)]
        latest = max(drafts, key=lambda d: str(d.get("updated_at") or d.get("created_at") or ""), default=None)
        regions = list(context_regions) + (latest["result"] if latest else [])
        candidates = [region for region in regions if region.get("from_name") in config.mask_tools
                      and isinstance(region.get("id"), str)  # a merged mask replaces a region on screen by its id
                      and region["id"] not in leaving
                      and _first_label(region) in merging]
        limit = self.settings.max_screen_masks
        if len(candidates) > limit:
            raise RequestError(f"{len(candidates)} masks of merging labels on screen, over the limit of {limit} "
                               "(MAX_SCREEN_MASKS) that one request reads for merge_overlapping", 422)
        masks: dict[str, list[tuple[dict, np.ndarray]]] = {}
        for region in candidates:
            labels = [_first_label(region)]
            try:
                masks.setdefault(labels[0], []).append((region, mask_from_region(region, width, height)))
            except RegionError as exc:
                log.info("not merging with an existing %s region: %s", labels[0], exc)
        return masks

    def _entry(self, segmentations: list[Segmentation], routed: Routed,
               project: ProjectContext) -> tuple[dict, list[Segmentation], list[int]]:
        """The task's entry for finished segmentations; for each of its regions the segmentation of
        what the region covers (a polygon covers one part of its mask, holes filled), and the index of
        the segmentation it comes from."""
        for note in routed.pending:
            log.info("pending: %s", note)
        regions = [(region, covered, parent) for parent, s in enumerate(segmentations)
                   for region, covered in project.output.regions(s, project.config, routed.image_rotation)]
        return (task_entry([region for region, _, _ in regions], project.version),
                [covered for _, covered, _ in regions], [parent for _, _, parent in regions])

    # -- fit ------------------------------------------------------------------------------------

    def fit(self, action: str, payload: dict) -> dict:
        """Hands a webhook event to the sinks that want it (``backend.webhooks``: the event log,
        retraining, pre-annotation, embedding ahead) and returns their answer."""
        return self.webhooks.handle(action, payload)


def _task_key(project_ref, task: dict) -> tuple | None:
    """(project id, task id): what the known objects of a task are kept under; None without a task id."""
    task_id = task.get("id")
    return (project_id(project_ref), task_id) if isinstance(task_id, int) and not isinstance(task_id, bool) else None


def _first_label(region: dict) -> str | None:
    """The first label of a region (``value[<type>][0]``), if it has one."""
    labels = (region.get("value") or {}).get(region.get("type"))
    return labels[0] if isinstance(labels, list) and labels and isinstance(labels[0], str) else None


def _warn_on_other_size(task: dict, regions: list, config: LabelingConfig, image) -> None:
    """Logs when the browser reports another image size than the one loaded (e.g. the image changed
    since it was shown): the masks, made at the loaded size, would not fit the annotator's image."""
    shown = {(r.get("original_width"), r.get("original_height")) for r in regions
             if isinstance(r, dict) and r.get("from_name") in config.tools and r.get("original_width")}
    for width, height in shown - {(image.width, image.height)}:
        log.warning("task %s: Label Studio shows the image at %s x %s px, the backend loaded it at %d x %d px; "
                    "masks are made at the loaded size", task.get("id"), width, height, image.width, image.height)


def _version_of(segmenters: SegmenterSet) -> str:
    extreme = segmenters.extreme_version if segmenters.extreme is not None else "noextreme"
    sam = segmenters.sam_name if segmenters.sam is not None else "nosam"
    return f"{MODEL_VERSION_PREFIX}{extreme}+{sam}"


def extreme_version_of(model_version: str) -> str | None:
    """The extreme-point model version in one of this backend's model versions
    (``segassist-<extreme>+<sam>``: version names hold no "+"); None for any other string."""
    if not model_version.startswith(MODEL_VERSION_PREFIX) or "+" not in model_version:
        return None
    return model_version[len(MODEL_VERSION_PREFIX):].rsplit("+", 1)[0]
