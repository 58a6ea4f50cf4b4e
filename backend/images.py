"""Fetching task images: Label Studio uploads/local files/cloud storage, http(s) URLs, data: URIs.

Every image is returned as the *natural* image of ``backend.prompts``: EXIF orientation applied,
RGB uint8, (H, W, 3). Downloads are bounded in bytes, pixels and time, and every failure is an
``ImageError`` whose message says what went wrong and what to do, without secrets (no tokens,
no presigned query strings).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes, urlsplit, urlunsplit

import numpy as np
import requests
import urllib3
from PIL import Image, ImageOps, UnidentifiedImageError

from backend.ls_auth import PAT_HINT, LabelStudioAuth, LabelStudioAuthError, origin
from backend.settings import Settings

# URI schemes of Label Studio cloud storages; Label Studio resolves them for a task.
CLOUD_SCHEMES = ("s3", "gs", "azure-blob")
_CHUNK_BYTES = 64 * 1024


class ImageError(Exception):
    """An image could not be loaded. The message is safe to show to users and to log."""


class ImageSourceError(ImageError):
    """The image reference cannot be fetched as given (unsupported scheme, missing LABEL_STUDIO_URL, …)."""


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


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """A decoded natural image.

    array: (H, W, 3) uint8 RGB, EXIF orientation applied; read-only because the cache shares it.
    key: a stable id of the image content (sha1 of the downloaded bytes), for caching embeddings.
    """

    array: np.ndarray
    key: str

    @property
    def height(self) -> int:
        return int(self.array.shape[0])

    @property
    def width(self) -> int:
        return int(self.array.shape[1])


class ImageLoader:
    """Loads images by URL with limits from ``settings`` and an LRU cache of decoded images.

    ``auth`` authorizes requests to Label Studio; by default it is built from
    ``settings.label_studio_url`` and ``settings.label_studio_api_key``. Thread-safe.
    """

    def __init__(self, settings: Settings, auth: LabelStudioAuth | None = None):
        self._settings = settings
        self._auth = auth if auth is not None else LabelStudioAuth.from_settings(settings)
        self._cache: OrderedDict[str, LoadedImage] = OrderedDict()
        self._cache_lock = threading.Lock()

    def load(self, url: str, task_id: int | None = None) -> LoadedImage:
        """The image at ``url`` (a task's image value). ``task_id`` is needed only for cloud
        storage URIs (s3://, gs://, azure-blob://), which Label Studio resolves per task.

        Raises an ImageError subclass on any failure.
        """
        if not isinstance(url, str):
            raise ImageSourceError(f"an image reference must be a string, not {type(url).__name__}")
        url = url.strip()
        if url.startswith("data:"):  # decoded each time: nothing to gain from caching a copy
            return _decode(_data_uri_bytes(url, self._settings.image_max_bytes), self._settings.image_max_pixels)
        absolute = self._absolute_url(url, task_id)
        with self._cache_lock:
            if absolute in self._cache:
                self._cache.move_to_end(absolute)
                return self._cache[absolute]
        image = _decode(self._download(absolute), self._settings.image_max_pixels)
        with self._cache_lock:
            self._cache[absolute] = image
            while len(self._cache) > self._settings.image_cache_size:
                self._cache.popitem(last=False)
        return image

    def _absolute_url(self, url: str, task_id: int | None) -> str:
        scheme = urlsplit(url).scheme.lower()
        if scheme in ("http", "https"):
            return url
        if scheme in CLOUD_SCHEMES:
            if task_id is None:
                raise ImageSourceError(
                    f"{scheme}:// images are resolved by Label Studio per task, but no task id was given"
                )
            fileuri = base64.urlsafe_b64encode(url.encode()).decode()
            return self._label_studio_url(f"/tasks/{task_id}/resolve/?fileuri={fileuri}", f"a {scheme}:// image")
        if url.startswith("/") and not url.startswith("//"):
            return self._label_studio_url(url, f"'{_describe_path(url)}'")
        raise ImageSourceError(
            f"unsupported image reference '{_describe_path(url)}': expected an http(s) URL, a Label Studio "
            "path (/data/upload/…, /data/local-files/?d=…), a cloud storage URI or a data: URI; "
            "local file paths are not read — serve them through Label Studio local-files storage"
        )

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
        if self._auth is not None:
            return self._auth.is_label_studio_url(url)
        base = self._settings.label_studio_url
        return bool(base) and origin(url) == origin(base)

    def _download(self, url: str) -> bytes:
        """The response body of GET ``url``, within the byte and time limits.

        Authorization goes to the Label Studio origin only; on a redirect to another host (e.g. a
        presigned S3 URL) ``requests`` drops the Authorization header.
        """
        timeout_s = self._settings.image_timeout_s
        what = _describe(url, self._is_label_studio_url(url))
        try:
            headers = self._auth.headers_for(url) if self._auth is not None else {}
        except LabelStudioAuthError as exc:
            raise ImageAuthError(f"cannot download {what}: {exc}") from None
        deadline = time.monotonic() + timeout_s
        try:
            with requests.get(url, headers=headers, stream=True, timeout=timeout_s) as response:
                self._check_status(response, what)
                body = self._read_body(response, what, deadline)
        except (requests.Timeout, urllib3.exceptions.TimeoutError):
            raise ImageTimeout(f"downloading {what} took longer than {timeout_s:g} s (IMAGE_TIMEOUT)") from None
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            hint = ""
            if self._is_label_studio_url(url):
                hint = "; check LABEL_STUDIO_URL is reachable from the backend (in Docker, localhost is the container)"
            raise ImageFetchError(f"could not download {what} ({type(exc).__name__}){hint}") from None
        if response.headers.get("Content-Type", "").startswith("text/html") and self._is_label_studio_url(response.url):
            # Label Studio sends its login page, not an error status, to unauthenticated browsers.
            raise ImageAuthError(f"Label Studio answered {what} with an HTML page, probably its login page: {PAT_HINT}")
        return body

    def _read_body(self, response: requests.Response, what: str, deadline: float) -> bytes:
        max_bytes = self._settings.image_max_bytes
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > max_bytes:
            raise ImageTooLarge(f"{what} is {int(length)} bytes, over the limit of {max_bytes} (IMAGE_MAX_BYTES)")
        chunks, received = [], 0
        # read1 returns what one socket read brings, so a server that trickles bytes cannot hold
        # the download past the deadline (plain reads wait until a whole chunk has arrived).
        while chunk := response.raw.read1(_CHUNK_BYTES, decode_content=True):
            received += len(chunk)
            if received > max_bytes:
                raise ImageTooLarge(f"{what} is over the limit of {max_bytes} bytes (IMAGE_MAX_BYTES)")
            if time.monotonic() > deadline:
                raise requests.Timeout()
            chunks.append(chunk)
        return b"".join(chunks)

    def _check_status(self, response: requests.Response, what: str) -> None:
        code = response.status_code
        if code < 400:
            return
        if code in (401, 403):
            if self._is_label_studio_url(response.url):
                missing = "" if self._auth is not None else " (no LABEL_STUDIO_API_KEY is set)"
                raise ImageAuthError(f"Label Studio refused {what} (HTTP {code}){missing}: {PAT_HINT}")
            host = origin(response.url)[1]
            raise ImageAuthError(
                f"{host} refused {what} (HTTP {code}): a presigned URL may have expired; if {host} is the Label "
                "Studio server, set LABEL_STUDIO_URL to the address it is reached at, so the backend sends its token"
            )
        if code == 404:
            raise ImageNotFound(f"{what} was not found (HTTP 404)")
        raise ImageFetchError(f"downloading {what} failed with HTTP {code}")


def _describe_path(url: str, limit: int = 200) -> str:
    return url if len(url) <= limit else url[:limit] + "…"


def _describe(url: str, on_label_studio: bool) -> str:
    """``url`` for messages: foreign URLs lose their query (presigned URLs carry signatures there)."""
    if on_label_studio:
        return _describe_path(url)
    parts = urlsplit(url)
    return _describe_path(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")))


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
    return unquote_to_bytes(payload)


def _decode(data: bytes, max_pixels: int) -> LoadedImage:
    """Decode, checking the pixel count from the header before decoding the pixels."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"the image has over {max_pixels} pixels (IMAGE_MAX_PIXELS)") from None
    except (UnidentifiedImageError, OSError):
        raise NotAnImage(f"the {len(data)} bytes downloaded are not an image format Pillow can read") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"the image is {width}x{height} pixels, over the limit of {max_pixels} (IMAGE_MAX_PIXELS)")
    try:
        array = _rgb_uint8(ImageOps.exif_transpose(image))
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, struct.error, …) on corrupt data
        raise NotAnImage(f"the {image.format or 'image'} data is corrupt or truncated ({type(exc).__name__})") from None
    array.flags.writeable = False
    return LoadedImage(array=array, key=hashlib.sha1(data).hexdigest())


def _rgb_uint8(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of any Pillow mode. Alpha is dropped; 16-bit keeps the high byte;
    32-bit int/float images (which browsers cannot show either) are stretched min..max to 0..255."""
    if image.mode.startswith("I;16"):
        gray = (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
    elif image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        gray = ((values - low) * scale).round().astype(np.uint8)
    else:
        return np.array(image.convert("RGB"), dtype=np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)
