"""Fetching task images: Label Studio uploads/local files/cloud storage, http(s) URLs, data: URIs.

Every image is returned as the *natural* image of ``backend.prompts``: EXIF orientation applied,
RGB uint8, (H, W, 3). Downloads are bounded in bytes, pixels and total time (one deadline for
connecting, every redirect hop, headers and body, ``IMAGE_TIMEOUT``), follow at most
``MAX_REDIRECTS`` redirects, each hop re-deciding the Label Studio token (``backend.ls_auth``) and
checked against ``IMAGE_URL_ALLOWLIST``, through the one Label Studio client
(``backend.label_studio_client``: 429/503 tried again after ``Retry-After`` within the deadline).
Concurrent loads of one URL share one download; at most ``IMAGE_DOWNLOADS`` downloads of request
threads run at once per process, at most half of them (at least one) from one host, so slow hosts
cannot hold every slot; a request waits for a slot within its deadline and is answered busy only
when the deadline passes. Decoded images are cached by URL in an LRU bounded in bytes
(``IMAGE_CACHE_BYTES``).

Every failure is an ``ImageError``: its message is safe for answers (URLs redacted by
``backend.urls.redact``), and says what went wrong for Label Studio's own host, allowlisted hosts and
data: URIs; for any other host it is the same generic sentence, so that answers do not map other
hosts (status codes, sizes, connection errors). ``detail`` holds the full reason, for the log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import threading
import time
from collections import OrderedDict
from contextlib import nullcontext
from urllib.parse import unquote_to_bytes

import requests
import urllib3
from PIL import Image, UnidentifiedImageError

from backend.deadline_http import DeadlineSession
from backend.download_slots import DownloadSlots, NoSlot
from backend.label_studio_client import LabelStudioClient
from backend.ls_auth import PAT_HINT, LabelStudioAuthError
from backend.pixels import natural_rgb
from backend.prompts import LoadedImage
from backend.settings import Settings
from backend.single_flight import SingleFlight
from backend.urls import UrlError, install_log_redaction, origin, parse_http_url, redact

# URI schemes of Label Studio cloud storages; Label Studio resolves them for a task.
CLOUD_SCHEMES = ("s3", "gs", "azure-blob")
MAX_REDIRECTS = 5
# Formats browsers show (Label Studio displays the image in one); no other Pillow decoder runs.
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF")
_CHUNK_BYTES = 64 * 1024
# A Huffman-coded JPEG spends at least one bit on every 8x8 block of luma (its DC code), so it has at
# least one byte per 512 pixels. (Arithmetic-coded JPEGs can be smaller, but browsers do not show them.)
_JPEG_MIN_PIXELS_PER_BYTE = 512

install_log_redaction()


class ImageError(Exception):
    """An image could not be loaded. The message is safe to show to users and to log; ``detail``
    (for the log only) may say more. ``transient``: Label Studio itself did not serve its image now
    (unreachable, timed out, HTTP 5xx or 429): worth trying again later, unlike an answer about the image."""

    def __init__(self, message: str, detail: str | None = None, transient: bool = False):
        super().__init__(message)
        self.detail = detail or message
        self.transient = transient


class ImageSourceError(ImageError):
    """The image reference cannot be fetched as given (unsupported scheme, malformed URL, host not
    allowed, missing LABEL_STUDIO_URL, …)."""


class ImageAuthError(ImageError):
    """The server refused the download (HTTP 401/403), or no access token could be obtained."""


class ImageNotFound(ImageError):
    """HTTP 404."""


class ImageTimeout(ImageError):
    """The download took longer than the configured timeout."""


class ImageTooLarge(ImageError):
    """More bytes or pixels than the configured limits."""


class NotAnImage(ImageError):
    """The bytes are not an image Pillow can decode (or are corrupt)."""


class ImageFetchError(ImageError):
    """Any other download failure: connection refused, HTTP 5xx, broken transfer, …"""


class ImageBusy(ImageError):
    """No download slot (``IMAGE_DOWNLOADS``) came free within ``IMAGE_TIMEOUT``; try again."""


class _ByteBoundedCache:
    """LRU of decoded images whose arrays total at most ``capacity`` bytes; an image larger than
    that is not kept. Not thread-safe by itself."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.bytes = 0
        self._images: OrderedDict[str, LoadedImage] = OrderedDict()

    def get(self, key: str) -> LoadedImage | None:
        image = self._images.get(key)
        if image is not None:
            self._images.move_to_end(key)
        return image

    def put(self, key: str, image: LoadedImage) -> None:
        if key in self._images or image.array.nbytes > self.capacity:
            return
        self._images[key] = image
        self.bytes += image.array.nbytes
        while self.bytes > self.capacity:
            _, evicted = self._images.popitem(last=False)
            self.bytes -= evicted.array.nbytes

    def __len__(self) -> int:
        return len(self._images)


_ALLOWLIST_ENTRY = re.compile(r"(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\]")


def check_allowlist(allowlist: tuple[str, ...]) -> tuple[str, ...]:
    """The allowlist entries, lowercase; ValueError naming IMAGE_URL_ALLOWLIST for an entry that is no
    host (e.g. a URL or host:port, which would never match)."""
    entries = tuple(entry.lower() for entry in allowlist)
    for entry in entries:
        if not _ALLOWLIST_ENTRY.fullmatch(entry):
            raise ValueError(f"IMAGE_URL_ALLOWLIST: {entry[:80]!r} is not a host name, IP address, [IPv6 address] "
                             "or *.domain (no scheme, port or path)")
    return entries


def host_allowed(host: str, allowlist: tuple[str, ...]) -> bool:
    """Whether ``host`` matches an allowlist entry: a host name or IP (``[::1]`` for IPv6), or
    ``*.example.com`` for every subdomain of example.com."""
    host = host.lower()
    return any(host == entry or (entry.startswith("*.") and host.endswith(entry[1:])) for entry in allowlist)


class ImageLoader:
    """Loads images by URL with limits from ``settings`` and a byte-bounded LRU of decoded images.

    ``client`` makes the requests (the token for Label Studio's URLs); by default it is built from
    ``settings.label_studio_url`` and ``settings.label_studio_api_key`` (a malformed URL fails here,
    at start-up). Thread-safe.
    """

    def __init__(self, settings: Settings, client: LabelStudioClient | None = None):
        self._settings = settings
        self._client = client if client is not None else LabelStudioClient.from_settings(settings)
        self._allowlist = check_allowlist(settings.image_url_allowlist)
        self._cache = _ByteBoundedCache(settings.image_cache_bytes)
        self._cache_lock = threading.Lock()  # guards _cache and the counters
        self._hits = self._misses = 0
        self._slots = DownloadSlots(settings.image_downloads, per_host=settings.image_downloads // 2)
        self._in_flight: SingleFlight[LoadedImage] = SingleFlight()

    def load(self, url: str, task_id: int | None = None, background: bool = False) -> LoadedImage:
        """The image at ``url`` (a task's image value). ``task_id`` is needed only for cloud
        storage URIs (s3://, gs://, azure-blob://), which Label Studio resolves per task.
        ``background``: the caller is a background thread of its own (embedding ahead), not a request
        thread, so its download does not take one of the ``IMAGE_DOWNLOADS`` slots that keep request
        threads free (it would only make an annotator's request wait). Concurrent loads of one URL
        share one download and its outcome.

        Raises an ImageError subclass on any failure.
        """
        if not isinstance(url, str):
            raise ImageSourceError(f"an image reference must be a string, not {type(url).__name__}")
        url = url.strip()
        if url.startswith("data:"):  # decoded each time: nothing to gain from caching a copy
            return _decode(_data_uri_bytes(url, self._settings.image_max_bytes), self._settings.image_max_pixels)
        absolute = self._absolute_url(url, task_id)
        with self._cache_lock:
            cached = self._cache.get(absolute)
            self._hits += cached is not None
            self._misses += cached is None
        if cached is not None:
            return cached
        timeout_s = self._settings.image_timeout_s
        return self._in_flight.run(absolute, lambda: self._fetch(absolute, background), wait_s=timeout_s,
                                   on_timeout=lambda: ImageTimeout(f"loading '{redact(absolute)}' took longer than "
                                                                   f"{timeout_s:g} s (IMAGE_TIMEOUT)",
                                                                   transient=self._is_label_studio_url(absolute)))

    def _fetch(self, url: str, background: bool) -> LoadedImage:
        """Downloads, decodes and caches the image at ``url`` (absolute)."""
        with self._cache_lock:
            cached = self._cache.get(url)  # a load that finished since this one looked
        if cached is not None:
            return cached
        data, final_url = self._download(url, background)
        try:
            image = _decode(data, self._settings.image_max_pixels)
        except ImageError as exc:
            raise self._shown(exc, final_url, url) from None
        with self._cache_lock:
            self._cache.put(url, image)
        return image

    def stats(self) -> dict:
        """The decoded-image LRU, for the status page: entries, bytes, capacity in bytes, hits, misses,
        hit rate (data: URIs are decoded each time and not counted)."""
        with self._cache_lock:
            hits, misses, entries, size = self._hits, self._misses, len(self._cache), self._cache.bytes
        return {"entries": entries, "bytes": size, "capacity": self._cache.capacity, "hits": hits, "misses": misses,
                "hit_rate": round(hits / (hits + misses), 4) if hits + misses else None}

    def _absolute_url(self, url: str, task_id: int | None) -> str:
        scheme_match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", url)
        scheme = scheme_match.group(1).lower() if scheme_match else ""
        if scheme in ("http", "https"):
            absolute = url
        elif scheme in CLOUD_SCHEMES:
            if task_id is None:
                raise ImageSourceError(
                    f"{scheme}:// images are resolved by Label Studio per task, but no task id was given"
                )
            fileuri = base64.urlsafe_b64encode(url.encode()).decode()
            absolute = self._label_studio_url(f"/tasks/{task_id}/resolve/?fileuri={fileuri}", f"a {scheme}:// image")
        elif url.startswith("/") and not url.startswith("//"):
            absolute = self._label_studio_url(url, f"'{redact(url)}'")
        else:
            raise ImageSourceError(
                f"unsupported image reference '{redact(url)}': expected an http(s) URL, a Label Studio "
                "path (/data/upload/…, /data/local-files/?d=…), a cloud storage URI or a data: URI; "
                "local file paths are not read — serve them through Label Studio local-files storage"
            )
        try:
            parse_http_url(absolute)
        except UrlError as exc:
            raise ImageSourceError(str(exc)) from None
        return absolute

    def _label_studio_url(self, path: str, what: str) -> str:
        """``path`` on the Label Studio server. Appended, not urljoin-ed, so a LABEL_STUDIO_URL with a
        sub-path (http://host/label-studio) keeps it."""
        if not self._settings.label_studio_url:
            raise ImageSourceError(
                f"{what} is served by Label Studio: set LABEL_STUDIO_URL (the address the backend reaches "
                "Label Studio at, e.g. http://label-studio:8080) and LABEL_STUDIO_API_KEY (a Personal Access Token)"
            )
        return self._settings.label_studio_url.rstrip("/") + path

    def _is_label_studio_url(self, url: str) -> bool:
        return self._client.is_label_studio_url(url)

    def _allowed(self, url: str, host: str) -> bool:
        """Label Studio's own address (scheme, host and port: not other services on its host) always;
        any host without an allowlist; else the allowlisted ones."""
        return not self._allowlist or self._is_label_studio_url(url) or host_allowed(host, self._allowlist)

    def _trusted(self, url: str) -> bool:
        """Whether failures at ``url`` may be described in answers: Label Studio, allowlisted hosts."""
        if self._is_label_studio_url(url):
            return True
        try:
            return bool(self._allowlist) and host_allowed(origin(url)[1], self._allowlist)
        except UrlError:
            return False

    def _shown(self, exc: ImageError, url: str, requested: str) -> ImageError:
        """``exc`` as answers may show it: unchanged for trusted ``url``s and for refusals decided on
        the URL alone (ImageSourceError), else generic (the reason stays in ``detail``)."""
        if isinstance(exc, ImageSourceError) or self._trusted(url):
            return exc
        generic = f"the image at {redact(requested)} could not be loaded; the reason is in the ML backend's log"
        return type(exc)(generic, detail=f"{exc.detail} (at {redact(url)})", transient=exc.transient)

    def _download(self, url: str, background: bool = False) -> tuple[bytes, str]:
        """The body of GET ``url`` after at most MAX_REDIRECTS redirects, and the URL it came from.

        The Label Studio token is decided per hop on the URL as sent (``LabelStudioClient.send``),
        so a redirect to a presigned URL or anywhere else never carries it; and once a chain has left
        Label Studio, no later hop carries it either (a foreign redirect back to Label Studio must not
        fetch its data with the backend's token); on Label Studio, only its media paths get the token
        (``LabelStudioClient.is_media_url``: never an API path named by a task). Waiting for a slot
        counts against the deadline.
        """
        timeout_s = self._settings.image_timeout_s
        started = time.monotonic()
        try:
            slot = nullcontext() if background else self._slots.slot(origin(url), wait_s=timeout_s)
            with slot:
                return self._download_within(url, timeout_s - (time.monotonic() - started))
        except NoSlot:
            raise ImageBusy(f"{self._settings.image_downloads} image downloads kept running for {timeout_s:g} s "
                            "(IMAGE_DOWNLOADS, IMAGE_TIMEOUT); try again in a moment",
                            transient=self._is_label_studio_url(url)) from None

    def _download_within(self, url: str, timeout_s: float) -> tuple[bytes, str]:
        with DeadlineSession(timeout_s) as session:
            hop_url, on_label_studio = url, self._client.auth is not None
            for hop in range(MAX_REDIRECTS + 1):
                on_label_studio = on_label_studio and self._is_label_studio_url(hop_url)
                with_token = on_label_studio and self._client.is_media_url(hop_url)
                try:
                    target, body = self._get(session, hop_url, with_token, redirected=hop > 0)
                except ImageError as exc:
                    raise self._shown(exc, hop_url, url) from None
                if target is None:
                    return body, hop_url
                hop_url = target
            raise self._shown(ImageFetchError(f"downloading '{redact(url)}' was redirected more than "
                                              f"{MAX_REDIRECTS} times"), hop_url, url)

    def _get(self, session: DeadlineSession, url: str, with_token: bool, redirected: bool) -> tuple[str | None, bytes]:
        """One hop: (redirect target, b"") or (None, body)."""
        what = f"'{redact(url)}'"
        try:
            host = origin(url)[1]
        except UrlError as exc:
            raise ImageSourceError(f"a redirect pointed to a malformed URL: {exc}" if redirected else str(exc)) from None
        if not self._allowed(url, host):
            where = "was redirected to a host" if redirected else f"is on host '{host}', which is"
            raise ImageSourceError(f"the image {where} not in IMAGE_URL_ALLOWLIST",
                                   detail=f"{what}: host '{host}' is not in IMAGE_URL_ALLOWLIST")
        timeout_s = self._settings.image_timeout_s
        try:
            with self._client.send(session, "GET", url, with_token=with_token, stream=True) as response:
                if response.is_redirect:
                    target = session.get_redirect_target(response)
                    return (target, b"") if target else (None, b"")
                self._check_status(response, url, what)
                body = self._read_body(response, session, what)
                if response.headers.get("Content-Type", "").startswith("text/html") and self._is_label_studio_url(url):
                    # Label Studio sends its login page, not an error status, to unauthenticated browsers.
                    raise ImageAuthError(
                        f"Label Studio answered {what} with an HTML page, probably its login page: {PAT_HINT}")
                return None, body
        except LabelStudioAuthError as exc:  # the access-token refresh: unreachable or 5xx is an outage
            raise ImageAuthError(f"cannot download {what}: {exc}", transient=exc.transient) from None
        except requests.Timeout:
            raise ImageTimeout(f"downloading {what} took longer than {timeout_s:g} s (IMAGE_TIMEOUT)",
                               transient=self._is_label_studio_url(url)) from None
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            on_label_studio = self._is_label_studio_url(url)
            if session.deadline.expired:  # the deadline cut the transfer
                raise ImageTimeout(f"downloading {what} took longer than {timeout_s:g} s (IMAGE_TIMEOUT)",
                                   transient=on_label_studio) from None
            hint = ""
            if on_label_studio:
                hint = "; check LABEL_STUDIO_URL is reachable from the backend (in Docker, localhost is the container)"
            raise ImageFetchError(f"could not download {what} ({type(exc).__name__}){hint}",
                                  transient=on_label_studio) from None

    def _read_body(self, response: requests.Response, session: DeadlineSession, what: str) -> bytes:
        max_bytes = self._settings.image_max_bytes
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > max_bytes:
            raise ImageTooLarge(f"{what} is {int(length)} bytes, over the limit of {max_bytes} (IMAGE_MAX_BYTES)")
        chunks, received = [], 0
        # read1 returns what one socket read brings, so the deadline is checked between reads (and
        # the deadline's timer cuts a read that waits).
        while chunk := response.raw.read1(_CHUNK_BYTES, decode_content=True):
            received += len(chunk)
            if received > max_bytes:
                raise ImageTooLarge(f"{what} is over the limit of {max_bytes} bytes (IMAGE_MAX_BYTES)")
            session.check()
            chunks.append(chunk)
        session.check()  # the deadline may have ended the body early
        return b"".join(chunks)

    def _check_status(self, response: requests.Response, url: str, what: str) -> None:
        code = response.status_code
        if code < 400:
            return
        if code in (401, 403):
            if self._is_label_studio_url(url):
                missing = "" if self._client.auth is not None else " (no LABEL_STUDIO_API_KEY is set)"
                raise ImageAuthError(f"Label Studio refused {what} (HTTP {code}){missing}: {PAT_HINT}")
            host = origin(url)[1]
            raise ImageAuthError(
                f"{host} refused {what} (HTTP {code}): a presigned URL may have expired; if {host} is the Label "
                "Studio server, set LABEL_STUDIO_URL to the address it is reached at, so the backend sends its token"
            )
        if code == 404:
            raise ImageNotFound(f"{what} was not found (HTTP 404)")
        raise ImageFetchError(f"downloading {what} failed with HTTP {code}",
                              transient=(code == 429 or code >= 500) and self._is_label_studio_url(url))


def _data_uri_bytes(uri: str, max_bytes: int) -> bytes:
    """The payload of ``data:[<mediatype>][;base64],<data>``."""
    header, comma, payload = uri.partition(",")
    if not comma:
        raise ImageSourceError("malformed data: URI (no ',' before the data)")
    if len(payload) * 3 // 4 > max_bytes:
        raise ImageTooLarge(f"the data: URI holds over {max_bytes} bytes (IMAGE_MAX_BYTES)")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except binascii.Error:
            raise ImageSourceError("malformed data: URI (invalid base64)") from None
    data = unquote_to_bytes(payload)  # percent-encoded: up to 3 characters a byte, so checked once decoded
    if len(data) > max_bytes:
        raise ImageTooLarge(f"the data: URI holds over {max_bytes} bytes (IMAGE_MAX_BYTES)")
    return data


def _decode(data: bytes, max_pixels: int) -> LoadedImage:
    """Decode, checking the pixel count from the header before decoding the pixels."""
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"the image has over {max_pixels} pixels (IMAGE_MAX_PIXELS)") from None
    except (UnidentifiedImageError, OSError):
        raise NotAnImage(f"the {len(data)} bytes downloaded are not an image in a format browsers show "
                         f"({', '.join(IMAGE_FORMATS)})") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"the image is {width}x{height} pixels, over the limit of {max_pixels} (IMAGE_MAX_PIXELS)")
    if image.format in ("JPEG", "MPO") and len(data) * _JPEG_MIN_PIXELS_PER_BYTE < width * height:
        # libjpeg decodes a cut-off file as grey, at full size: 600 bytes claiming 48 Mpx took 5 s and 0.9 GB.
        raise NotAnImage(f"the JPEG claims {width}x{height} pixels but has only {len(data)} bytes, fewer than any "
                         "complete JPEG of that size: it is truncated")
    try:
        array = natural_rgb(image)
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, struct.error, …) on corrupt data
        raise NotAnImage(f"the {image.format or 'image'} data is corrupt or truncated ({type(exc).__name__})") from None
    array.flags.writeable = False
    return LoadedImage(array=array, key=hashlib.sha1(data).hexdigest())
