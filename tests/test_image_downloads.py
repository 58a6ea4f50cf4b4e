"""Image downloads against real servers on 127.0.0.1: where the Label Studio token may go, one
deadline per download, redirects, concurrent downloads, the host allowlist, generic answers about
foreign hosts, and URLs in logs."""

import io
import logging
import threading
import time
from dataclasses import replace

import pytest
from PIL import Image

from backend.images import (
    MAX_REDIRECTS,
    ImageBusy,
    ImageError,
    ImageFetchError,
    ImageLoader,
    ImageNotFound,
    ImageSourceError,
    ImageTimeout,
    ImageTooLarge,
)
from backend.ls_auth import LabelStudioAuth, LabelStudioAuthError
from backend.label_studio_client import LabelStudioClient
from backend.settings import Settings
from backend.urls import origin
from local_http import LocalServer, content, delayed, redirect, respond, trickle_headers

TOKEN = "0123456789abcdef0123456789abcdef01234567"  # a legacy token: sent as "Token …" without refresh


def png(width: int = 8, height: int = 6) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def ls():
    server = LocalServer()
    server.routes["/data/upload/1/x.png"] = content(png())
    yield server
    server.close()


@pytest.fixture
def foreign():
    server = LocalServer()
    server.routes["/x.png"] = content(png())
    yield server
    server.close()


def loader_for(ls: LocalServer, **changes) -> ImageLoader:
    return ImageLoader(replace(Settings(label_studio_url=ls.url, label_studio_api_key=TOKEN), **changes))


def authorizations(server: LocalServer) -> list:
    return [seen.headers.get("Authorization") for seen in server.seen]


# --- finding 1: the token goes only where Label Studio is, decided on the URL as sent -------------


def test_the_token_reaches_label_studio(ls):
    loader_for(ls).load("/data/upload/1/x.png")
    assert authorizations(ls) == [f"Token {TOKEN}"]


@pytest.mark.parametrize("authority", [
    "127.0.0.1:{foreign}\\@127.0.0.1:{ls}",  # urllib.parse: host after the @; urllib3: host before the \
    "127.0.0.1:{foreign}\\\\@127.0.0.1:{ls}",
    "127.0.0.1:{foreign}\\x@127.0.0.1:{ls}",
    "127.0.0.1:{foreign} @127.0.0.1:{ls}",
    "127.0.0.1:{foreign}\t@127.0.0.1:{ls}",
    "127.0.0.1:{foreign}\n@127.0.0.1:{ls}",
    "127.0.0.1:{foreign}\x00@127.0.0.1:{ls}",
    "127.0.0.1\\:{ls}",
    "127.0.0.1:{ls}\\",
])
def test_ambiguous_authorities_are_refused_and_nothing_is_sent(ls, foreign, authority):
    url = f"http://{authority.format(foreign=foreign.port, ls=ls.port)}/data/upload/1/x.png"
    with pytest.raises(ImageSourceError, match="backslash, space or control character"):
        loader_for(ls).load(url)
    assert ls.seen == [] and foreign.seen == []


@pytest.mark.parametrize("authority", [
    "user:pass@127.0.0.1:{ls}",  # userinfo on the Label Studio origin
    "127.0.0.1:{ls}@127.0.0.1:{ls}",
    "x@127.0.0.1:{ls}",
    ":@127.0.0.1:{ls}",
])
def test_urls_with_userinfo_never_carry_credentials(ls, authority):
    loader_for(ls).load(f"http://{authority.format(ls=ls.port)}/data/upload/1/x.png")
    assert authorizations(ls) == [None]  # neither the token nor Basic credentials from the URL


def test_userinfo_naming_label_studio_before_a_foreign_host_gets_no_token(ls, foreign):
    loader_for(ls).load(f"http://127.0.0.1:{ls.port}@127.0.0.1:{foreign.port}/x.png")
    assert authorizations(foreign) == [None] and ls.seen == []


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:99999/x.png", "http://127.0.0.1:port/x.png", "http://[::1/x.png", "http://[zz::1]/x.png",
    "http:///x.png", "http://127.0.0.1:-1/x.png", "https://[::1]:8080:1/x.png",
])
def test_unparseable_urls_are_source_errors(ls, url):
    with pytest.raises(ImageSourceError):
        loader_for(ls).load(url)
    assert ls.seen == []


def test_each_redirect_hop_decides_the_token(ls, foreign):
    ls.routes["/data/upload/1/moved.png"] = redirect(f"{foreign.url}/x.png", 307)
    loader_for(ls).load("/data/upload/1/moved.png")
    assert authorizations(ls) == [f"Token {TOKEN}"] and authorizations(foreign) == [None]


def test_a_foreign_redirect_back_to_label_studio_carries_no_token(ls, foreign):
    foreign.routes["/bounce.png"] = redirect(f"{ls.url}/data/upload/1/x.png")
    loader_for(ls).load(f"{foreign.url}/bounce.png")
    assert authorizations(foreign) == [None] and authorizations(ls) == [None]


def test_a_redirect_to_an_ambiguous_url_is_refused(ls, foreign):
    ls.routes["/data/upload/1/moved.png"] = redirect(f"http://127.0.0.1:{foreign.port}\\@127.0.0.1:{ls.port}/x.png")
    with pytest.raises(ImageSourceError, match="redirect pointed to a malformed URL"):
        loader_for(ls).load("/data/upload/1/moved.png")
    assert foreign.seen == []


# --- finding 2: the refresh token is never re-sent by a redirect --------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirected_refresh_is_an_error_and_the_key_goes_nowhere_else(ls, foreign, status):
    ls.routes["/api/token/refresh/"] = redirect(f"{foreign.url}/api/token/refresh/", status)
    pat = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2ln"
    auth = LabelStudioAuth(ls.url, pat)
    with pytest.raises(LabelStudioAuthError, match=f"redirect \\(HTTP {status}\\)") as error:
        auth.headers_for(f"{ls.url}/data/upload/1/x.png")
    assert foreign.seen == [] and pat not in str(error.value)


def test_a_trickling_refresh_is_cut_at_its_deadline(ls):
    ls.routes["/api/token/refresh/"] = trickle_headers(0.02)
    auth = LabelStudioAuth(ls.url, "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2ln", timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(LabelStudioAuthError, match="could not reach"):
        auth.headers_for(f"{ls.url}/x")
    assert time.monotonic() - started < 1.5


# --- finding 3: one deadline per download, at most 5 redirects, never every thread -----------------


def test_trickled_headers_are_cut_at_the_deadline(ls, foreign):
    foreign.routes["/slow.png"] = trickle_headers(0.02)
    started = time.monotonic()
    with pytest.raises(ImageTimeout):
        loader_for(ls, image_timeout_s=0.4, image_url_allowlist=("127.0.0.1",)).load(f"{foreign.url}/slow.png")
    assert time.monotonic() - started < 1.5


def test_a_slow_redirect_chain_shares_one_deadline(ls, foreign):
    for hop in range(4):
        foreign.routes[f"/hop{hop}"] = redirect(f"{foreign.url}/hop{hop + 1}", delay_s=0.15)
    foreign.routes["/hop4"] = content(png())
    started = time.monotonic()
    with pytest.raises(ImageTimeout):  # each hop is quick, the chain is not
        loader_for(ls, image_timeout_s=0.4).load(f"{foreign.url}/hop0")
    assert time.monotonic() - started < 1.2


def test_at_most_five_redirects(ls, foreign):
    for hop in range(MAX_REDIRECTS + 1):
        foreign.routes[f"/r{hop}"] = redirect(f"/r{hop + 1}")  # relative Location
    foreign.routes[f"/r{MAX_REDIRECTS}"] = content(png())
    assert loader_for(ls).load(f"{foreign.url}/r0").width == 8  # 5 redirects: fine
    foreign.routes[f"/r{MAX_REDIRECTS}"] = redirect("/r0")
    with pytest.raises(ImageFetchError) as error:
        loader_for(ls, image_url_allowlist=("127.0.0.1",)).load(f"{foreign.url}/r1")
    assert f"more than {MAX_REDIRECTS}" in str(error.value)


def test_a_request_waits_for_a_download_slot_instead_of_failing(ls, foreign):
    foreign.routes["/slow.png"] = delayed(content(png()), 0.4)
    loader = loader_for(ls, image_downloads=1)
    holder = threading.Thread(target=lambda: loader.load(f"{foreign.url}/slow.png"))
    holder.start()
    time.sleep(0.1)  # the holder has the only slot
    started = time.monotonic()
    assert loader.load("/data/upload/1/x.png").width == 8  # waited for the slot, then loaded
    assert time.monotonic() - started >= 0.2
    holder.join()


def test_busy_only_when_no_slot_comes_free_within_the_deadline(ls):
    loader = loader_for(ls, image_timeout_s=0.5, image_downloads=1)
    with loader._slots.slot(origin(ls.url), wait_s=0):  # another request holds the only slot throughout
        started = time.monotonic()
        with pytest.raises(ImageBusy, match="IMAGE_DOWNLOADS") as error:
            loader.load("/data/upload/1/x.png")
        assert 0.45 <= time.monotonic() - started < 1.0
    assert error.value.transient, "Label Studio too slow to free a slot: a job waits it out"
    assert ls.seen == []
    assert loader.load("/data/upload/1/x.png").width == 8  # slots are given back


def test_a_slow_host_cannot_hold_every_slot(ls, foreign):
    foreign.routes["/slow1.png"] = foreign.routes["/slow2.png"] = trickle_headers(0.02)  # 8 s: past the deadline
    timeout_s = 3.0
    loader = loader_for(ls, image_timeout_s=timeout_s, image_downloads=2)  # at most 1 per host
    asked = []  # the hosts that asked for a slot, before waiting for it
    slot = loader._slots.slot
    loader._slots.slot = lambda host, wait_s: asked.append(host) or slot(host, wait_s)
    errors = []
    slow = [threading.Thread(target=lambda path=path: errors.append(_error_of(loader, f"{foreign.url}{path}")))
            for path in ("/slow1.png", "/slow2.png")]
    for thread in slow:
        thread.start()
    wait_for(lambda: len(asked) == 2 and foreign.seen)  # one slow download runs, the other waits for its slot
    started = time.monotonic()
    assert loader.load("/data/upload/1/x.png").width == 8  # the fast host still gets a slot
    assert time.monotonic() - started < timeout_s / 2, "the fast host waited for a slow host's slot"
    assert len(foreign.seen) == 1  # while the first holds the slow host's slot, the second never gets it
    for thread in slow:
        thread.join()
    assert all(isinstance(error, (ImageTimeout, ImageBusy)) for error in errors), errors


def wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.01)


def test_concurrent_loads_of_one_url_share_one_download(ls):
    ls.routes["/data/upload/1/new.png"] = delayed(content(png(16, 12)), 0.3)
    loader = loader_for(ls, image_downloads=1)
    images, errors = [], []

    def load(url):
        try:
            images.append(loader.load(url))
        except ImageError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load, args=("/data/upload/1/new.png",)) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(images) == 12 and len({id(image) for image in images}) == 1
    assert [seen.path for seen in ls.seen] == ["/data/upload/1/new.png"]
    ls.routes["/data/upload/1/gone.png"] = delayed(lambda handler: respond(handler, 404, b"no"), 0.3)
    threads = [threading.Thread(target=load, args=("/data/upload/1/gone.png",)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [type(error) for error in errors] == [ImageNotFound] * 6  # one failure, everyone told
    assert len({id(error) for error in errors}) == 6 and len(ls.seen) == 2


def test_background_downloads_take_no_request_slot(ls, foreign):
    # Embedding ahead runs on a thread of its own: it must not make an annotator's request wait,
    # nor wait because requests hold every slot.
    foreign.routes["/slow.png"] = trickle_headers(0.02)
    loader = loader_for(ls, image_timeout_s=1.0, image_downloads=1)
    holder = threading.Thread(target=lambda: _error_of(loader, f"{foreign.url}/slow.png"))
    holder.start()
    time.sleep(0.2)  # the request holds the only slot
    started = time.monotonic()
    assert loader.load(f"{foreign.url}/x.png", background=True).width == 8
    assert time.monotonic() - started < 0.5
    holder.join()


def test_label_studio_rate_limiting_is_waited_out_within_the_deadline(ls):
    answers = iter([(429, {"Retry-After": "1"}), (503, {"Retry-After": "0"})])

    def limited(handler):
        status, headers = next(answers, (200, {"Content-Type": "image/png"}))
        respond(handler, status, png() if status == 200 else b"slow down", headers)

    ls.routes["/data/upload/1/limited.png"] = limited
    started = time.monotonic()
    assert loader_for(ls).load("/data/upload/1/limited.png").width == 8
    assert time.monotonic() - started >= 1.0 and len(ls.seen) == 3
    assert authorizations(ls) == [f"Token {TOKEN}"] * 3
    ls.routes["/data/upload/1/later.png"] = lambda handler: respond(handler, 429, b"", {"Retry-After": "30"})
    started = time.monotonic()
    with pytest.raises(ImageFetchError, match="HTTP 429"):  # 30 s would pass the deadline: no wait
        loader_for(ls, image_timeout_s=2.0).load("/data/upload/1/later.png")
    assert time.monotonic() - started < 1.0


def _error_of(loader, url):
    try:
        loader.load(url)
    except ImageError as exc:
        return exc
    return None


# --- finding 9: allowlist and generic answers about foreign hosts -------------------------------------


def test_the_allowlist_refuses_other_hosts_before_connecting(ls, foreign):
    loader = loader_for(ls, image_url_allowlist=("images.example", "*.cdn.example"))
    with pytest.raises(ImageSourceError, match="not in IMAGE_URL_ALLOWLIST"):
        loader.load(f"http://localhost:{foreign.port}/x.png")
    assert foreign.seen == []
    assert loader.load("/data/upload/1/x.png").width == 8  # Label Studio's address is always allowed
    with pytest.raises(ImageSourceError, match="not in IMAGE_URL_ALLOWLIST"):  # not other ports on its host
        loader.load(f"http://127.0.0.1:{foreign.port}/x.png")
    assert foreign.seen == []


def test_the_allowlist_applies_to_redirect_targets(ls, foreign):
    ls.routes["/data/upload/1/moved.png"] = redirect(f"http://localhost:{foreign.port}/x.png")
    with pytest.raises(ImageSourceError, match="redirected to a host not in IMAGE_URL_ALLOWLIST") as error:
        loader_for(ls, image_url_allowlist=("images.example",)).load("/data/upload/1/moved.png")
    assert foreign.seen == [] and "localhost" not in str(error.value)


def test_allowlist_entries(ls):
    from backend.images import host_allowed

    allowlist = ("images.example", "*.cdn.example", "[::1]")
    assert host_allowed("IMAGES.example", allowlist) and host_allowed("a.b.cdn.example", allowlist)
    assert host_allowed("[::1]", allowlist)
    assert not host_allowed("cdn.example", allowlist) and not host_allowed("evilcdn.example", allowlist)
    assert not host_allowed("images.example.evil", allowlist)


@pytest.mark.parametrize("entry", ["https://cdn.example", "cdn.example:443", "cdn.example/images", "*", "a b"])
def test_allowlist_entries_that_are_no_host_fail_at_start_up(ls, entry):
    with pytest.raises(ValueError, match="IMAGE_URL_ALLOWLIST"):
        loader_for(ls, image_url_allowlist=("cdn.example", entry))


def test_a_label_studio_url_with_userinfo_is_refused_at_start_up():
    with pytest.raises(ValueError, match="user:password@"):
        LabelStudioAuth("http://admin:pw@ls.example:8080", TOKEN)


def test_failures_at_foreign_hosts_answer_one_generic_message(ls, foreign):
    foreign.routes["/500.png"] = lambda handler: respond(handler, 500, b"oops")
    foreign.routes["/text"] = content(b"hello", "text/plain")
    foreign.routes["/big.png"] = content(png(300, 300))
    loader = loader_for(ls, image_max_pixels=10_000)
    closed = LocalServer()
    closed.close()
    messages = {}
    for detail, url in {"HTTP 404": f"{foreign.url}/missing.png", "HTTP 500": f"{foreign.url}/500.png",
                        "not an image": f"{foreign.url}/text", "300x300 pixels": f"{foreign.url}/big.png",
                        "ConnectionError": f"{closed.url}/x.png"}.items():
        with pytest.raises(ImageError) as error:
            loader.load(url)
        messages[detail] = str(error.value).replace(url, "URL")
        assert "ML backend's log" in messages[detail] and detail in error.value.detail
    assert len(set(messages.values())) == 1, messages


def test_failures_at_label_studio_are_described(ls):
    with pytest.raises(ImageError, match="not found \\(HTTP 404\\)"):
        loader_for(ls).load("/data/upload/1/missing.png")


# --- finding 10: no userinfo or query string in answers or logs, at any level ---------------------------


def test_userinfo_and_query_never_reach_answers_or_logs(ls, foreign, caplog):
    caplog.set_level(logging.DEBUG)
    secret_url = f"http://alice:hunter2@127.0.0.1:{foreign.port}/missing.png?X-Amz-Signature=s3cr3t"
    with pytest.raises(ImageError) as error:
        loader_for(ls).load(secret_url)
    loader_for(ls).load(f"{foreign.url}/x.png?X-Amz-Signature=s3cr3t")  # urllib3 logs it at DEBUG
    shown = [str(error.value), error.value.detail] + [record.getMessage() for record in caplog.records]
    assert any("urllib3" in record.name for record in caplog.records)  # the DEBUG lines were there
    for text in shown:
        assert "hunter2" not in text and "s3cr3t" not in text and "alice" not in text, text


def test_too_large_is_refused_while_streaming_without_content_length(ls, foreign):
    def endless(handler):
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for _ in range(1000):
            handler.wfile.write(b"1000\r\n" + b"x" * 4096 + b"\r\n")

    foreign.routes["/endless.png"] = endless
    with pytest.raises(ImageTooLarge, match="IMAGE_MAX_BYTES"):
        loader_for(ls, image_max_bytes=100_000, image_url_allowlist=("127.0.0.1",)).load(f"{foreign.url}/endless.png")


# --- other calls with the token: one deadline, no redirects ------------------------------------------


def test_the_next_tasks_page_is_read_with_the_token_within_its_deadline(ls, foreign):
    import json

    import backend.embeddings.next_tasks as next_tasks

    page = json.dumps({"tasks": [{"id": 8, "data": {"image": "/data/upload/1/x.png"}}]}).encode()
    ls.routes["/api/tasks/"] = content(page, "application/json")
    reader = next_tasks.NextTasks(LabelStudioClient(ls.url, LabelStudioAuth(ls.url, TOKEN), timeout_s=0.3))
    assert [task["id"] for task in reader.after("3", 7, 2)] == [8]
    assert authorizations(ls) == [f"Token {TOKEN}"]
    ls.routes["/api/tasks/"] = trickle_headers(0.02)
    started = time.monotonic()
    with pytest.raises(next_tasks.NextTasksError):
        reader.after("3", 7, 2)
    assert time.monotonic() - started < 1.5
    ls.routes["/api/tasks/"] = redirect(f"{foreign.url}/api/tasks/")
    with pytest.raises(next_tasks.NextTasksError, match="HTTP 302"):
        reader.after("3", 7, 2)
    assert foreign.seen == []
