"""The HTTP server Label Studio connects to as an ML backend (Flask app factory).

Routes (see ``PROTOCOL.md``): ``GET /health``, ``POST /setup``, ``POST /predict``,
``GET /versions``, ``POST /webhook``, and ``GET /``, a status page for people
(``backend.status_page``). Models load once, in ``create_app``; no route loads one.

Errors answer ``{"error": "<message>"}`` with a 4xx/5xx status whose HTTP reason phrase is the
same message (ASCII, shortened). Label Studio never shows a response body, but it does show the
``requests`` error text, which contains the reason phrase: e.g. adding the backend to a project
whose labeling config has no mask control fails in Label Studio with "Reason: 422 Client Error:
the labeling config has no BrushLabels or PolygonLabels control… for url: …/setup" (angle brackets are dropped from
the reason phrase, as Label Studio may render it as HTML). ``/setup`` fails (424) the same way when Label
Studio refuses the backend's token (``LABEL_STUDIO_API_KEY``), so a refused token never shows as
"Connected". Messages never contain
request payloads, tokens or passwords; every request is logged as one line with its timing.

Malformed input never answers 5xx: bodies over ``MAX_REQUEST_BYTES`` get 413, bodies that are not
JSON (or nest too deeply) 400, fields of the wrong type 400 naming the field
(``backend.request_shapes``); ``/webhook`` answers 2xx or 4xx whatever it is sent. A full disk
(``MODEL_DIR``) answers 507 with a message, on any route. With Basic Auth
configured, a ``START_TRAINING`` event (Label Studio's "Start training" button, which sends the
credentials) starts nothing without them, even while ``/webhook`` is open for annotation events.
"""

from __future__ import annotations

import json
import logging
import re
import time

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from backend import status_page
from backend.active_learning.events import START_TRAINING
from backend.basic_auth import REALM, BasicAuth
from backend.components import Components
from backend.embeddings.ahead import EmbedAhead
from backend.files import disk_full
from backend.jobs.routes import jobs_blueprint
from backend.label_studio_check import OK, LabelStudioCheck
from backend.labeling import LabelingError
from backend.model import RequestError
from backend.project_options import OptionError
from backend.project_store import ProjectIdError, project_id
from backend.request_shapes import ShapeError
from backend.segmenter_set import SegmenterSet
from backend.settings import Settings
from backend.webhooks import EventError

log = logging.getLogger("backend.app")

_REASON_MAX = 200


def error_response(status: int, message: str) -> Response:
    response = jsonify({"error": message})
    # Label Studio may render the text as HTML, so no angle brackets.
    reason = re.sub(r"[<>]", "", re.sub(r"[^\x20-\x7e]", "?", message))[:_REASON_MAX].strip() or "error"
    response.status = f"{status} {reason}"
    return response


def _json_body() -> dict:
    try:
        body = json.loads(request.get_data(cache=True))
    except RecursionError:
        raise RequestError("the request body's JSON is nested too deeply") from None
    except ValueError:  # also UnicodeDecodeError
        raise RequestError("the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    return body


def embedding_health(cache, embed_ahead: EmbedAhead | None) -> dict:
    """The SAM embedding store (where, bytes, entries, hit rate) and the embed-ahead queue depth."""
    health = cache.stats()
    if embed_ahead is not None:
        health["queue"] = embed_ahead.queue.depth()
    return health


def create_app(settings: Settings | None = None, segmenters: SegmenterSet | None = None, images=None,
               components: Components | None = None, embed_ahead: EmbedAhead | None = None,
               label_studio: LabelStudioCheck | None = None) -> Flask:
    """The Flask app, on ``components`` (default: built from ``settings``, ``segmenters`` and
    ``images``, anything not given from the environment: ``backend.components``). Tests pass fakes.
    With background work (``components.background``), projects are served their own extreme-point
    versions, webhooks reach retraining and pre-annotation, and ``/jobs`` shows and takes jobs; the
    dispatcher is started per worker process by ``gunicorn.conf.py``
    (``app.extensions["dispatcher"].start()``). With SAM loaded, ``embed_ahead`` computes embeddings
    before the annotator asks (default: from the settings); ``/health`` and ``GET /jobs`` show the
    store and that work. ``label_studio``: the check of ``LABEL_STUDIO_URL`` and its token for
    ``/health``."""
    if components is None:
        components = Components(settings, segmenters=segmenters, images=images)
    elif settings is not None or segmenters is not None or images is not None:
        raise ValueError("give settings, segmenters and images to Components, not beside them")
    settings, segmenters, images = components.settings, components.segmenters, components.images
    if label_studio is None:
        label_studio = LabelStudioCheck(settings)
    if embed_ahead is None and segmenters.sam is not None and segmenters.embeddings is not None:
        embed_ahead = EmbedAhead.from_settings(settings, segmenters.sam, images, components.project_store)
    components.embed_ahead = embed_ahead
    model = components.model
    auth = BasicAuth(settings.basic_auth_user, settings.basic_auth_pass)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    started_at = time.time()
    app.extensions["segmentation_model"] = model
    app.extensions["dispatcher"] = components.dispatcher
    if components.jobs is not None:
        app.register_blueprint(jobs_blueprint(components.jobs, components.executor,
                                              embed_ahead.queue if embed_ahead is not None else None))

    @app.before_request
    def start():
        g.started = time.perf_counter()
        g.detail = ""
        open_webhook = request.path == "/webhook" and not settings.webhook_requires_auth
        if not open_webhook and not auth.allows(request.authorization):
            response = error_response(401, "authentication required")
            response.headers["WWW-Authenticate"] = REALM
            return response

    @app.after_request
    def log_request(response: Response) -> Response:
        elapsed_ms = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        log.info("%s %s %s %.0f ms%s", request.method, request.path, response.status_code, elapsed_ms,
                 g.get("detail", ""))
        return response

    @app.errorhandler(RequestError)
    def request_error(exc: RequestError):
        return error_response(exc.status, str(exc))

    @app.errorhandler(LabelingError)
    @app.errorhandler(OptionError)
    def config_error(exc: ValueError):
        log.warning("%s %s: %s", request.method, request.path, exc)
        return error_response(422, str(exc))

    @app.errorhandler(ProjectIdError)
    @app.errorhandler(EventError)
    @app.errorhandler(ShapeError)
    def project_error(exc: ValueError):
        return error_response(400, str(exc))

    @app.errorhandler(RecursionError)
    def too_deep(exc: RecursionError):  # only input nested thousands deep gets here
        return error_response(400, "the request nests too deeply")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.code == 413:
            return error_response(413, f"the request body is over {settings.max_request_bytes} bytes "
                                       "(MAX_REQUEST_BYTES)")
        return error_response(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(OSError)
    def os_error(exc: OSError):
        if not disk_full(exc):
            return unexpected(exc)
        log.error("%s %s: the disk is full: %s", request.method, request.path, exc)
        return error_response(507, "the ML backend's disk is full (MODEL_DIR); free space there and try again")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, f"internal error ({type(exc).__name__}); see the ML backend's log")

    @app.get("/health")
    def health():
        return jsonify({
            "status": "UP",
            "model_class": type(model).__name__,
            "model_version": model.model_version_for(),
            "loaded": segmenters.loaded,
            **segmenters.status,
            **({"embeddings": embedding_health(segmenters.embeddings, embed_ahead)} if segmenters.embeddings is not None else {}),
            "label_studio": label_studio.status(),
            "proposals": model.proposals_overview(),
        })

    @app.get("/")
    def status():
        sections = status_page.collect(model, images, label_studio, components.jobs, started_at, embed_ahead)
        return Response(status_page.render(sections), mimetype="text/html")

    @app.post("/setup")
    def setup():
        body = _json_body()
        if not isinstance(body.get("schema"), str):
            raise RequestError('/setup needs "schema", the labeling config')
        answer = model.setup(body.get("project"), body["schema"], body.get("extra_params"))
        g.detail = f" project={project_id(body.get('project'))}"
        # A refused token fails the connection (the Connect model dialog shows the reason); Label
        # Studio unreachable or not configured does not (/health and this log line say so).
        refusal = label_studio.refusal()
        if refusal:
            log.warning("/setup of project %s failed: Label Studio refuses the token: %s", project_id(body.get("project")),
                        refusal)
            return error_response(424, refusal)
        checked = label_studio.status(wait_s=0)
        if checked != OK:
            g.detail += f" label_studio: {checked}"
        return jsonify(answer)

    @app.post("/predict")
    def predict():
        body = _json_body()
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise RequestError('/predict needs "tasks", a list of task objects')
        params = body.get("params") if isinstance(body.get("params"), dict) else {}
        context = params.get("context")
        label_config = body.get("label_config")
        if label_config is not None and not isinstance(label_config, str):
            raise RequestError('"label_config" must be the labeling config as a string')
        g.detail = f" tasks={len(tasks)}" + (" interactive" if context is not None else "")
        results = model.predict(tasks, body.get("project"), label_config, context)
        return jsonify({"results": results})

    @app.get("/versions")
    def versions():
        body = request.get_json(force=True, silent=True)
        project = request.args.get("project") or (body.get("project") if isinstance(body, dict) else None)
        return jsonify(model.versions(project))

    @app.post("/webhook")
    def webhook():
        body = _json_body()
        action = body.get("action")
        if not isinstance(action, str) or not action:
            raise RequestError('a webhook event needs "action", a string')
        g.detail = f" action={action[:40]}"
        if action == START_TRAINING and not auth.allows(request.authorization):
            # Training calls Label Studio with the token: only Label Studio's button (which sends the
            # connection's Basic Auth) may start it.
            response = error_response(401, "START_TRAINING needs the Basic Auth of the ML backend connection")
            response.headers["WWW-Authenticate"] = REALM
            return response
        try:
            answer = model.fit(action, {key: value for key, value in body.items() if key != "action"})
        except EventError:
            raise
        except Exception as exc:  # Label Studio only logs a failed webhook; a 5xx would say the sender erred less
            if disk_full(exc):  # ours to fix, and said so (507)
                raise
            log.exception("webhook %s could not be processed", action[:40])
            return error_response(400, f"the {action[:40]} event could not be processed; see the ML backend's log")
        return jsonify({"status": "ok", **answer})

    return app
