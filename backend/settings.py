"""Backend settings, read once from environment variables (names follow Label Studio ML backend conventions)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backend.project_options import ProjectOptions

from backend.segmenters.sam_types import DEFAULT_SAM_TYPE

REPO_ROOT = Path(__file__).resolve().parent.parent


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _switch(value: str | None, name: str, default: bool) -> bool:
    """An on/off setting; anything else is an error naming the variable (a typo must not pass as off)."""
    if value is None or value.strip() == "":
        return default
    word = value.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be on or off (true/false, 1/0, yes/no), got {value!r}")


def _list(value: str | None) -> tuple[str, ...]:
    """A comma- or space-separated list."""
    return tuple(item for item in (value or "").replace(",", " ").split() if item)


def _json(value: str | None, name: str) -> dict:
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name} is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{name} must be a JSON object")
    return parsed


def _default_options(env) -> "ProjectOptions | None":
    """The server default project options from ``POLICIES_FILE`` (a path) or else ``POLICIES`` (JSON);
    raises OptionError naming the variable and the key when they cannot be used."""
    path, text = env.get("POLICIES_FILE"), env.get("POLICIES")
    if not path and not text:
        return None
    # Imported here: the options pull in OpenCV and the Label Studio SDK, which commands that serve
    # nothing (download-sam) need not load.
    from backend.project_options import OptionError, ProjectOptions

    if not path:
        return ProjectOptions.parse(text, "POLICIES")
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise OptionError(f"POLICIES_FILE {path}: cannot be read ({type(exc).__name__}: {exc})") from None
    return ProjectOptions.parse(text, f"POLICIES_FILE {path}")


@dataclass(frozen=True)
class Settings:
    # Where per-project state, model versions and training jobs live (shared by all workers/replicas).
    model_dir: Path = REPO_ROOT / "var"
    # Custom extreme-point model weights (directory with manifest.json); default: the committed ones.
    extreme_weights: Path = REPO_ROOT / "model_weights" / "extreme"
    # Edge-aware refinement of its masks at the photo's resolution (backend.segmenters.native_refine).
    extreme_native_refine: bool = False
    # SAM: checkpoint path (None or missing file -> SAM disabled, box fallback to the custom model).
    sam_model_type: str = DEFAULT_SAM_TYPE  # one of backend.segmenters.sam_types.SAM_TYPES
    sam_checkpoint: Path | None = None
    device: str = "auto"  # "auto" picks cuda when available
    # SAM's image encoder: "auto" (bfloat16 for SAM 2.1 where the device has it natively), "float32", "bfloat16".
    sam_precision: str = "auto"
    # LS -> backend Basic Auth (optional); whether /webhook demands it too (LS event webhooks send none).
    basic_auth_user: str = ""
    basic_auth_pass: str = ""
    webhook_requires_auth: bool = False
    # Backend -> LS (downloading uploads, reading annotations): a Personal Access Token.
    label_studio_url: str = ""
    label_studio_api_key: str = field(default="", repr=False)
    # This backend's URL as Label Studio has it (the ML connection's URL): which of a project's ML
    # backends shows our training outcomes; unset: those whose model version is ours.
    ml_backend_url: str = ""
    # Scale-out: RQ job queues and the SAM embedding store in Redis.
    redis_url: str = field(default="", repr=False)  # may hold Redis's password
    # KeyPointLabels controls whose name starts with this prefix collect extreme points.
    extreme_tool_prefix: str = "extreme"
    # The server default project options (POLICIES / POLICIES_FILE: the shape of the ML connection's
    # extra params), under every project's own; None when neither is set.
    default_options: "ProjectOptions | None" = None
    # Batch /predict stops starting new tasks after this many seconds (Label Studio gives up at 100 s
    # and then stores nothing); the tasks left get empty entries and are predicted on the next call.
    predict_budget_s: float = 80.0
    # Image fetching limits. 50 Mpx holds 8192 x 6000 (48 MP cameras); its RGB array is 150 MB.
    image_max_bytes: int = 64 * 1024 * 1024
    image_max_pixels: int = 50_000_000
    image_timeout_s: float = 30.0  # one deadline per download: connect, redirects, headers, body
    image_cache_bytes: int = 256 * 1024 * 1024  # decoded images kept per process
    image_downloads: int = 2  # at once per process; keep below gunicorn THREADS
    # Hosts images may come from besides Label Studio's (empty: any); "*.example.com" for subdomains.
    image_url_allowlist: tuple[str, ...] = ()
    # SAM embeddings: per-process LRU (entries) in front of the shared store (bytes, LRU; files under
    # MODEL_DIR/embeddings, or Redis with REDIS_URL), float32 stored as float16 unless switched off.
    embedding_cache_size: int = 8
    embedding_store_bytes: int = 2 * 1024**3
    embedding_store_min_free_bytes: int = 1024**3  # the disk store stops short of filling the disk
    embedding_store_half: bool = True
    # Embed ahead: images queued per TASKS_CREATED event, next tasks queued per interactive call,
    # and the most images waiting at once.
    embed_ahead: int = 50
    embed_next_tasks: int = 3
    embed_queue_size: int = 1000
    # Work per request: request body size (sized for interactive requests whose drafts carry brush
    # masks, see README), prompt regions per task, masks on screen read for merging.
    max_request_bytes: int = 32 * 1024 * 1024
    max_prompt_regions: int = 100
    max_screen_masks: int = 24
    # Active learning.
    train_min_new_annotations: int = 10
    train_debounce_s: float = 10.0
    train_steps: int = 0  # fine-tuning steps per model a job trains; 0 = scaled with the instances
    train_min_instances: int = 6  # fewer annotated instances: a job says how many more and trains nothing
    train_threads: int = 0  # torch threads of a training job; 0 = half the CPU cores (serving keeps the rest)
    # Proposals (project option "proposals"): annotated tasks below which no proposal model is trained,
    # training steps (0 = the model's default for the number of tasks), most objects proposed per image.
    proposals_min_tasks: int = 8
    proposals_steps: int = 0
    proposals_max_objects: int = 100
    # The class-agnostic base a project's first proposal model starts from (a folder absent: the ImageNet encoder).
    proposals_base: Path = REPO_ROOT / "model_weights" / "proposals"
    # Pin a project to a model version (rollback): {"<project id>": "<version name>"}.
    pinned_versions: dict = field(default_factory=dict)
    # Pre-annotation jobs: tasks per chunk (with REDIS_URL, the unit RQ workers share a project in)
    # and torch threads of a job run by the embedded worker or an RQ worker (0 = half the CPU cores).
    preannotate_chunk_tasks: int = 16
    preannotate_threads: int = 0
    # At most this many tasks per pre-annotation job; those beyond are reported (not_planned), not worked.
    preannotate_max_tasks: int = 100_000

    @classmethod
    def from_env(cls, env: dict | None = None) -> "Settings":
        env = os.environ if env is None else env
        defaults = cls()
        checkpoint = env.get("SAM_CHECKPOINT")
        return cls(
            model_dir=Path(env.get("MODEL_DIR") or defaults.model_dir),
            extreme_weights=Path(env.get("EXTREME_WEIGHTS") or defaults.extreme_weights),
            extreme_native_refine=_switch(env.get("EXTREME_NATIVE_REFINE"), "EXTREME_NATIVE_REFINE",
                                          defaults.extreme_native_refine),
            sam_model_type=env.get("SAM_MODEL_TYPE") or defaults.sam_model_type,
            sam_checkpoint=Path(checkpoint) if checkpoint else None,
            device=env.get("DEVICE") or defaults.device,
            sam_precision=env.get("SAM_PRECISION") or defaults.sam_precision,
            basic_auth_user=env.get("BASIC_AUTH_USER", ""),
            basic_auth_pass=env.get("BASIC_AUTH_PASS", ""),
            webhook_requires_auth=_bool(env.get("WEBHOOK_REQUIRES_AUTH"), False),
            label_studio_url=(env.get("LABEL_STUDIO_URL") or "").rstrip("/"),
            label_studio_api_key=env.get("LABEL_STUDIO_API_KEY", ""),
            ml_backend_url=(env.get("ML_BACKEND_URL") or "").rstrip("/"),
            redis_url=env.get("REDIS_URL", ""),
            extreme_tool_prefix=env.get("EXTREME_TOOL_PREFIX") or defaults.extreme_tool_prefix,
            default_options=_default_options(env),
            predict_budget_s=float(env.get("PREDICT_BUDGET_S") or defaults.predict_budget_s),
            image_max_bytes=int(env.get("IMAGE_MAX_BYTES") or defaults.image_max_bytes),
            image_max_pixels=int(env.get("IMAGE_MAX_PIXELS") or defaults.image_max_pixels),
            image_timeout_s=float(env.get("IMAGE_TIMEOUT") or defaults.image_timeout_s),
            image_cache_bytes=int(env.get("IMAGE_CACHE_BYTES") or defaults.image_cache_bytes),
            image_downloads=int(env.get("IMAGE_DOWNLOADS") or defaults.image_downloads),
            image_url_allowlist=_list(env.get("IMAGE_URL_ALLOWLIST")),
            embedding_cache_size=int(env.get("EMBEDDING_CACHE_SIZE") or defaults.embedding_cache_size),
            embedding_store_bytes=int(env.get("EMBEDDING_STORE_BYTES") or defaults.embedding_store_bytes),
            embedding_store_min_free_bytes=int(env.get("EMBEDDING_STORE_MIN_FREE_BYTES")
                                               or defaults.embedding_store_min_free_bytes),
            embedding_store_half=_bool(env.get("EMBEDDING_STORE_FP16"), defaults.embedding_store_half),
            embed_ahead=int(env.get("EMBED_AHEAD") or defaults.embed_ahead),
            embed_next_tasks=int(env.get("EMBED_NEXT_TASKS") or defaults.embed_next_tasks),
            embed_queue_size=int(env.get("EMBED_QUEUE_SIZE") or defaults.embed_queue_size),
            max_request_bytes=int(env.get("MAX_REQUEST_BYTES") or defaults.max_request_bytes),
            max_prompt_regions=int(env.get("MAX_PROMPT_REGIONS") or defaults.max_prompt_regions),
            max_screen_masks=int(env.get("MAX_SCREEN_MASKS") or defaults.max_screen_masks),
            train_min_new_annotations=int(env.get("TRAIN_MIN_NEW_ANNOTATIONS") or defaults.train_min_new_annotations),
            train_debounce_s=float(env.get("TRAIN_DEBOUNCE_S") or defaults.train_debounce_s),
            train_steps=int(env.get("TRAIN_STEPS") or defaults.train_steps),
            train_min_instances=int(env.get("TRAIN_MIN_INSTANCES") or defaults.train_min_instances),
            train_threads=int(env.get("TRAIN_THREADS") or defaults.train_threads),
            proposals_min_tasks=max(2, int(env.get("PROPOSALS_MIN_TASKS") or defaults.proposals_min_tasks)),
            proposals_steps=int(env.get("PROPOSALS_STEPS") or defaults.proposals_steps),
            proposals_max_objects=max(1, int(env.get("PROPOSALS_MAX_OBJECTS") or defaults.proposals_max_objects)),
            proposals_base=Path(env.get("PROPOSALS_BASE_WEIGHTS") or defaults.proposals_base),
            pinned_versions=_json(env.get("PINNED_VERSIONS"), "PINNED_VERSIONS"),
            preannotate_chunk_tasks=max(1, int(env.get("PREANNOTATE_CHUNK_TASKS") or defaults.preannotate_chunk_tasks)),
            preannotate_threads=int(env.get("PREANNOTATE_THREADS") or defaults.preannotate_threads),
            preannotate_max_tasks=max(1, int(env.get("PREANNOTATE_MAX_TASKS") or defaults.preannotate_max_tasks)),
        )

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
