"""Embedding ahead of the annotator: the scheduler's priorities, duplicates and bounds; the triggers
(prewarm, TASKS_CREATED, the next tasks after an interactive call); /health and /jobs; the RQ
queues and worker on a real redis-server."""

import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from segmentation_fakes import CONFIG, FakeImages, predict_body, rectangle, setup_body, task
from test_sam import tiny_sam

from backend.app import create_app
from backend.components import Components
from backend.embeddings import rq_queue
from backend.embeddings.ahead import LOOKUP_INTERVAL_S, MAX_URL_CHARS, EmbedAhead, task_request
from backend.embeddings.embed_one import EmbedRequest
from backend.embeddings.preemption import Preempted
from backend.embeddings.scheduler import CURRENT, IMPORT, NEXT, EmbedScheduler
from backend.images import ImageNotFound
from backend.jobs.queues import SERIALIZER
from backend.jobs.worker import BackendWorker
from backend.project_store import ProjectStore
from backend.segmenter_set import SegmenterSet
from backend.embeddings.cache import EmbeddingCache
from backend.segmenters.sam import SamSegmenter, SegmentAnything
from backend.settings import Settings

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def req(name: str, task_id: int = 1) -> EmbedRequest:
    return EmbedRequest(url=f"http://images.test/{name}.jpg", task_id=task_id, project="7")


class GatedEmbed:
    """An ``embed`` function that records the order of images and holds the first until released."""

    def __init__(self, outcomes=None):
        self.order: list[str] = []
        self.first_started, self.release = threading.Event(), threading.Event()
        self.all_done = threading.Event()
        self.expected = 0
        self.outcomes = outcomes or {}

    def __call__(self, request: EmbedRequest) -> str:
        name = request.url.rsplit("/", 1)[1].removesuffix(".jpg")
        self.order.append(name)
        self.first_started.set()
        self.release.wait(5)
        outcome = self.outcomes.get(name, "embedded")
        if len(self.order) >= self.expected:
            self.all_done.set()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def wait_until(condition, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_image_an_annotator_opens_goes_first_then_next_tasks_then_imports():
    embed = GatedEmbed()
    scheduler = EmbedScheduler(embed, max_queued=100)
    scheduler.submit([req("first")], IMPORT)
    embed.first_started.wait(5)  # "first" is being embedded; the rest wait
    assert scheduler.submit([req("imp1"), req("imp2")], IMPORT) == 2
    assert scheduler.submit([req("next1")], NEXT) == 1
    assert scheduler.submit([req("opened")], CURRENT) == 1
    assert scheduler.submit([req("imp2")], CURRENT) == 1  # moved up
    assert scheduler.submit([req("first"), req("imp1"), req("next1")], IMPORT) == 0  # running / queued: dropped
    assert scheduler.depth() == {"current": 2, "next": 1, "import": 1, "total": 4}
    embed.expected = 5
    embed.release.set()
    embed.all_done.wait(10)
    assert embed.order == ["first", "opened", "imp2", "next1", "imp1"]
    wait_until(lambda: scheduler.status()["done"] == 5)
    scheduler.stop()


def test_the_queue_is_bounded_and_makes_room_for_higher_priorities():
    embed = GatedEmbed()
    scheduler = EmbedScheduler(embed, max_queued=2)
    scheduler.submit([req("running")], IMPORT)
    embed.first_started.wait(5)
    assert scheduler.submit([req("a"), req("b"), req("c")], IMPORT) == 2  # c dropped: full
    assert scheduler.submit([req("n")], NEXT) == 1  # b (the newest import) makes room
    assert scheduler.depth() == {"current": 0, "next": 1, "import": 1, "total": 2}
    embed.expected = 3
    embed.release.set()
    embed.all_done.wait(10)
    assert embed.order == ["running", "n", "a"]
    wait_until(lambda: scheduler.status()["done"] == 3)
    assert scheduler.status()["dropped"] == 2
    scheduler.stop()


def test_images_done_lately_are_not_queued_again_except_when_opened():
    embed = GatedEmbed()
    embed.release.set()
    scheduler = EmbedScheduler(embed, max_queued=10)
    scheduler.submit([req("a")], IMPORT)
    wait_until(lambda: scheduler.status()["done"] == 1)
    assert scheduler.submit([req("a")], IMPORT) == 0
    assert scheduler.submit([req("a")], NEXT) == 0
    assert scheduler.submit([req("a")], CURRENT) == 1  # opened: the store is asked again
    wait_until(lambda: scheduler.status()["done"] == 2)
    scheduler.stop()


def test_failures_are_recorded_per_task_and_a_preempted_image_is_embedded_later():
    embed = GatedEmbed(outcomes={"missing": ImageNotFound("no image at http://images.test/missing.jpg")})
    preempted_once = []

    def embed_or_give_way(request):
        if request.url.endswith("busy.jpg") and not preempted_once:
            preempted_once.append(1)
            raise Preempted("a request needs the encoder")
        return embed(request)

    embed.release.set()
    scheduler = EmbedScheduler(embed_or_give_way, max_queued=10)
    scheduler.submit([req("busy", 3), req("missing", 4), req("ok", 5)], IMPORT)
    wait_until(lambda: scheduler.status()["done"] == 3)
    status = scheduler.status()
    assert (status["embedded"], status["failed"]) == (2, 1)
    assert embed.order == ["busy", "missing", "ok"]  # busy gave way, then went first again
    [error] = status["errors"]
    assert error["task"] == 4 and "no image at" in error["error"]
    assert status["queued"]["total"] == 0 and status["total"] == 3 and status["eta_s"] == 0
    scheduler.stop()


# --- the triggers -------------------------------------------------------------------------------


class RecordingQueue:
    def __init__(self):
        self.submitted: list[tuple[int, list[EmbedRequest]]] = []

    def submit(self, requests, priority):
        self.submitted.append((priority, list(requests)))
        return len(requests)

    def depth(self):
        return {"current": 0, "next": 0, "import": 0, "total": 0}

    def status(self):
        return {"queued": self.depth()}


class FakeNextTasks:
    def __init__(self, tasks):
        self.tasks, self.calls = tasks, []

    def after(self, project, task_id, count, until=None):
        self.calls.append((project, task_id, count) if until is None else (project, task_id, count, until))
        return self.tasks[:count]


def sam_segmenters(store_dir=None) -> tuple[SegmenterSet, list]:
    """A tiny real-architecture SAM with an encoder-call counter, over a disk store when given."""
    from backend.embeddings.disk_store import DiskEmbeddingStore

    sam = tiny_sam()
    runs = []
    sam.image_encoder.register_forward_hook(lambda module, args, output: runs.append(1))
    store = DiskEmbeddingStore(store_dir, 1 << 30) if store_dir else None
    cache = EmbeddingCache(4, store)
    segmenter = SamSegmenter(SegmentAnything(sam), "sam-tiny", cache)
    return SegmenterSet(sam=segmenter, sam_name="sam-tiny", embeddings=cache), runs


def app_with(tmp_path, embed_ahead=None, segmenters=None, **settings):
    images = FakeImages({f"http://images.test/{n}.jpg": (64, 48) for n in range(1, 80)})
    config = replace(Settings(), model_dir=tmp_path, **settings)
    segmenters = segmenters or sam_segmenters(tmp_path / "embeddings")[0]
    app = create_app(config, segmenters=segmenters, images=images, embed_ahead=embed_ahead)
    return app, images


def numbered_task(n: int) -> dict:
    return task(task_id=n, url=f"http://images.test/{n}.jpg")


def forged_import(ids, urls) -> dict:
    """TASKS_CREATED as anyone can send it to the open webhook: task ids with images of their choosing."""
    return {"action": "TASKS_CREATED", "project": {"id": 7, "token": "project-secret"},
            "tasks": [{"id": i, "data": {"image": url}} for i, url in zip(ids, urls)]}


def test_tasks_created_queues_the_imported_tasks_images_as_label_studio_holds_them(tmp_path):
    """Issue 20, finding 6: the payload's image URLs (internal hosts, Label Studio API paths, huge
    strings) were downloaded. The event names tasks; their images come from Label Studio."""
    queue = RecordingQueue()
    in_label_studio = FakeNextTasks([numbered_task(n) for n in range(1, 13)])
    app, _ = app_with(tmp_path, EmbedAhead(queue, in_label_studio, embed_ahead=5, next_count=3,
                                           projects=ProjectStore.in_model_dir(tmp_path)))
    client = app.test_client()
    assert client.post("/setup", json=setup_body()).status_code == 200
    payload = forged_import(range(1, 13), ["http://10.0.0.1/admin", "/api/current-user/token", "http://x/" + "a" * 600_000]
                            + ["http://internal.test/x.jpg"] * 9)
    assert client.post("/webhook", json=payload).get_json()["embeddings_ahead"] == "looking up"
    wait_until(lambda: queue.submitted)
    [(priority, requests)] = queue.submitted
    assert priority == IMPORT and [r.task_id for r in requests] == [1, 2, 3, 4, 5]
    assert [r.url for r in requests] == [f"http://images.test/{n}.jpg" for n in range(1, 6)]
    assert requests[0].project == "7" and in_label_studio.calls == [("7", 0, 5, 12)]
    # The same event again (a flood of forged ones) is not looked up again within LOOKUP_INTERVAL_S.
    assert client.post("/webhook", json=payload).get_json()["embeddings_ahead"] == "skipped"
    time.sleep(0.2)
    assert len(in_label_studio.calls) == 1 and len(queue.submitted) == 1


def test_image_references_over_the_length_cap_are_not_queued():
    assert task_request({"id": 1, "data": {"image": "data:image/png;base64," + "A" * MAX_URL_CHARS}}, "image", "7") is None
    assert task_request({"id": 1, "data": {"image": "http://images.test/1.jpg"}}, "image", "7").url.endswith("1.jpg")


def test_tasks_created_without_label_studio_credentials_queues_nothing(tmp_path):
    queue = RecordingQueue()
    app, _ = app_with(tmp_path, EmbedAhead(queue, None, embed_ahead=5, next_count=3, projects=ProjectStore.in_model_dir(tmp_path)))
    client = app.test_client()
    client.post("/setup", json=setup_body())
    assert client.post("/webhook", json=forged_import([1], ["http://images.test/1.jpg"])).get_json()["embeddings_ahead"] == "off"
    assert queue.submitted == []


def test_tasks_created_for_a_project_without_setup_queues_nothing(tmp_path):
    queue = RecordingQueue()
    in_label_studio = FakeNextTasks([numbered_task(1)])
    app, _ = app_with(tmp_path, EmbedAhead(queue, in_label_studio, embed_ahead=5, next_count=3,
                                           projects=ProjectStore.in_model_dir(tmp_path)))
    payload = {"action": "TASKS_CREATED", "tasks": [numbered_task(1)], "project": {"id": 9}}
    assert app.test_client().post("/webhook", json=payload).get_json()["embeddings_ahead"] == "not connected"
    time.sleep(0.1)
    assert queue.submitted == [] and in_label_studio.calls == []


def test_prewarm_is_answered_at_once_and_its_image_is_embedded_before_the_first_prompt(tmp_path):
    segmenters, encoder_runs = sam_segmenters(tmp_path / "embeddings")
    app, images = app_with(tmp_path, segmenters=segmenters)
    client = app.test_client()
    client.post("/setup", json=setup_body())
    body = predict_body([numbered_task(3)], label_config=CONFIG)
    body["params"]["context"] = {"event": "prewarm"}
    started = time.monotonic()
    response = client.post("/predict", json=body)
    assert response.status_code == 200 and time.monotonic() - started < 1.0
    [entry] = response.get_json()["results"]
    assert entry["result"] == [] and entry["model_version"].startswith("segassist-")
    wait_until(lambda: encoder_runs == [1])
    wait_until(lambda: app.extensions["segmentation_model"].embed_ahead.queue.status()["embedded"] == 1)

    prompt = predict_body([numbered_task(3)], context=[rectangle(5, 5, 40, 30, size=(64, 48))])
    assert client.post("/predict", json=prompt).status_code == 200
    assert encoder_runs == [1]  # the first prompt was served from the store
    health = client.get("/health").get_json()["embeddings"]
    assert health["store"] == "disk" and health["entries"] == 1 and health["bytes"] > 0
    assert health["hit_rate"] == 1.0 and health["queue"]["total"] == 0
    jobs = client.get("/jobs").get_json()
    assert jobs["embeddings"]["embedded"] == 1 and jobs["embeddings"]["runs_in"] == "backend process"


def test_an_interactive_call_looks_up_the_next_tasks_in_the_background_once_a_minute(tmp_path):
    queue = RecordingQueue()
    next_tasks = FakeNextTasks([numbered_task(4), numbered_task(5), {"id": 6, "data": {}}])
    app, _ = app_with(tmp_path, EmbedAhead(queue, next_tasks, embed_ahead=5, next_count=3, projects=ProjectStore.in_model_dir(tmp_path)))
    client = app.test_client()
    client.post("/setup", json=setup_body())
    prompt = predict_body([numbered_task(3)], context=[rectangle(5, 5, 40, 30, size=(64, 48))])
    assert client.post("/predict", json=prompt).status_code == 200
    wait_until(lambda: queue.submitted)
    [(priority, requests)] = queue.submitted
    assert priority == NEXT and [r.task_id for r in requests] == [4, 5]  # task 6 has no image
    assert next_tasks.calls == [("7", 3, 3)]
    client.post("/predict", json=prompt)
    time.sleep(0.2)
    assert len(next_tasks.calls) == 1  # the same task again within LOOKUP_INTERVAL_S: not looked up again
    assert LOOKUP_INTERVAL_S >= 30


def test_health_and_jobs_without_sam_show_no_embeddings(tmp_path):
    config = replace(Settings(), model_dir=tmp_path)
    app = create_app(config, segmenters=SegmenterSet(), images=FakeImages())
    assert "embeddings" not in app.test_client().get("/health").get_json()
    assert "embeddings" not in app.test_client().get("/jobs").get_json()


# --- RQ: across machines ----------------------------------------------------------------------------


def test_rq_queues_drop_duplicates_move_requests_up_and_are_bounded(redis_server):  # noqa: F811
    queue = rq_queue.RQEmbedQueue(redis_server.url, max_queued=3)
    for rq in queue.queues:
        rq.empty()
    assert queue.submit([req("a"), req("b"), req("a")], IMPORT) == 2
    assert queue.submit([req("b")], CURRENT) == 1  # moved up
    assert queue.submit([req("b")], NEXT) == 0
    assert queue.depth() == {"current": 1, "next": 0, "import": 1, "total": 2}
    assert queue.submit([req("c"), req("d")], IMPORT) == 1  # d: the queues are full
    assert queue.status()["dropped"] >= 1
    for rq in queue.queues:
        rq.empty()


def test_a_worker_embeds_queued_images_in_priority_order_in_its_own_process(redis_server, tmp_path, monkeypatch):  # noqa: F811
    from redis import Redis

    Redis.from_url(redis_server.url).flushdb()
    segmenters, encoder_runs = sam_segmenters(tmp_path / "store")
    images = FakeImages({f"http://images.test/{name}.jpg": (64, 48) for name in ("imported", "opened")})
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setattr(Components, "of_this_process", lambda: Components(segmenters=segmenters, images=images))
    queue = rq_queue.RQEmbedQueue(redis_server.url, max_queued=10)
    queue.submit([req("imported", 1)], IMPORT)
    queue.submit([req("opened", 2)], CURRENT)
    queue.submit([EmbedRequest("http://images.test/gone.jpg", 3, "7")], NEXT)

    worker = BackendWorker(queue.queues, connection=queue.connection, serializer=SERIALIZER)
    worker.work(burst=True)

    assert images.loaded == ["http://images.test/opened.jpg", "http://images.test/imported.jpg"]
    assert encoder_runs == [1, 1]
    status = queue.status()
    assert (status["embedded"], status["failed"], status["queued"]["total"]) == (2, 1, 0)
    assert status["errors"][0]["task"] == 3 and "no image at" in status["errors"][0]["error"]
    assert queue.submit([req("opened", 2)], NEXT) == 0  # embedded lately: not queued again
    assert np.isfinite(status["rate_per_min"] or 0)


def test_import_events_take_the_stored_config_from_the_parse_cache(tmp_path, monkeypatch):
    """Issue 20, finding 7: every TASKS_CREATED parsed the project's stored config again (a 3.5 MB one
    took 2-3 s per event), bypassing the cache /predict uses."""
    from backend.labeling import LabelingConfig

    app, _ = app_with(tmp_path, EmbedAhead(RecordingQueue(), FakeNextTasks([]), embed_ahead=5, next_count=3,
                                           projects=ProjectStore.in_model_dir(tmp_path),
                                           extreme_tool_prefix=Settings().extreme_tool_prefix))
    client = app.test_client()
    client.post("/setup", json=setup_body())
    calls, original = [], LabelingConfig.parse
    monkeypatch.setattr(LabelingConfig, "parse", staticmethod(lambda xml, prefix: calls.append(1) or original(xml, prefix)))
    for n in range(1, 4):
        assert client.post("/webhook", json=forged_import([n], ["http://images.test/1.jpg"])).status_code == 200
    assert calls == []
