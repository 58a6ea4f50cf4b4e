"""ImageLoader: sources, Label Studio auth scoping, limits, errors, EXIF, pixel modes, cache."""

import base64
import hashlib
import io
import re
import time
import zlib
from dataclasses import replace
from urllib.parse import quote_from_bytes

import numpy as np
import pytest
import requests
from PIL import Image, ImageFile

from backend.images import (
    ImageAuthError,
    ImageFetchError,
    ImageLoader,
    ImageNotFound,
    ImageSourceError,
    ImageTimeout,
    ImageTooLarge,
    NotAnImage,
)
from backend.settings import Settings

LS = "http://ls.example:8080"
LEGACY_TOKEN = "0123456789abcdef0123456789abcdef01234567"
# images.example is allowlisted, so its failures are described in full; other hosts get a generic message.
SETTINGS = Settings(label_studio_url=LS, label_studio_api_key=LEGACY_TOKEN, image_url_allowlist=("images.example",))


def encode(image: Image.Image, fmt: str = "PNG", **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_args)
    return buffer.getvalue()


def rgb_png(width: int = 30, height: int = 20, color=(200, 10, 30)) -> bytes:
    return encode(Image.new("RGB", (width, height), color))


class SlowBody(io.RawIOBase):
    """A response body that trickles out 10 bytes every ``delay_s``."""

    def __init__(self, total: int, delay_s: float = 0.0):
        self.remaining, self.delay_s = total, delay_s

    def readable(self):
        return True

    def read(self, size=-1):
        return self.read1(size)

    def read1(self, size=-1):
        time.sleep(self.delay_s)
        n = min(10, self.remaining, size if size >= 0 else 10)
        self.remaining -= n
        return b"x" * n


# --- sources and auth scoping ---------------------------------------------------------------


def test_label_studio_upload_is_fetched_from_label_studio_url_with_the_token(requests_mock):
    data = rgb_png()
    requests_mock.get(f"{LS}/data/upload/3/cat.png", content=data)
    image = ImageLoader(SETTINGS).load("/data/upload/3/cat.png")

    assert image.array.shape == (20, 30, 3) and image.array.dtype == np.uint8
    assert (image.width, image.height) == (30, 20)
    assert tuple(image.array[0, 0]) == (200, 10, 30)
    assert image.key == hashlib.sha1(data).hexdigest()
    assert requests_mock.last_request.headers["Authorization"] == f"Token {LEGACY_TOKEN}"


def test_personal_access_token_is_used_as_bearer_for_local_files(requests_mock):
    def jwt(claims):
        payload = base64.urlsafe_b64encode(str(claims).replace("'", '"').encode()).rstrip(b"=").decode()
        return f"eyJhbGciOiJIUzI1NiJ9.{payload}.c2ln"

    pat, access = jwt({"token_type": "refresh"}), jwt({"token_type": "access", "iat": 0, "exp": 300})
    requests_mock.post(f"{LS}/api/token/refresh/", json={"access": access})
    requests_mock.get(f"{LS}/data/local-files/?d=photos/dog.png", content=rgb_png())
    settings = replace(SETTINGS, label_studio_api_key=pat)

    ImageLoader(settings).load("/data/local-files/?d=photos/dog.png")
    assert requests_mock.last_request.headers["Authorization"] == f"Bearer {access}"


def test_foreign_urls_never_get_the_token_even_after_a_redirect(requests_mock):
    presigned = "https://bucket.s3.amazonaws.com/cat.png?X-Amz-Signature=secret"
    requests_mock.get(presigned, content=rgb_png())
    loader = ImageLoader(replace(SETTINGS, image_url_allowlist=()))

    loader.load(presigned)
    assert "Authorization" not in requests_mock.last_request.headers

    cloud_uri = "s3://bucket/cat.png"
    fileuri = base64.urlsafe_b64encode(cloud_uri.encode()).decode()
    resolve = f"{LS}/tasks/7/resolve/?fileuri={fileuri}"
    requests_mock.get(resolve, status_code=303, headers={"Location": presigned})
    loader.load(cloud_uri, task_id=7)
    first, second = requests_mock.request_history[-2:]
    assert first.url == resolve and first.headers["Authorization"] == f"Token {LEGACY_TOKEN}"
    assert second.url == presigned and "Authorization" not in second.headers


@pytest.mark.parametrize("reference, token", [
    ("/data/upload/3/cat.png", True),
    ("/data/local-files/?d=photos/cat.png", True),
    ("/storage-data/uploaded/?filepath=3/cat.png", True),
    ("/tasks/7/resolve/?fileuri=czM6Ly9iL2MucG5n", True),
    ("/projects/3/presign/?fileuri=czM6Ly9iL2MucG5n", True),
    ("/api/current-user/token", False),
    (f"{LS}/api/projects/3/export", False),
    ("/data/upload/../../api/current-user/token", False),
    ("/data/upload/%2e%2e/%2e%2e/api/current-user/token", False),
    ("/data/upload/..%5c..%5capi/current-user/token", False),
    ("/static/samples/sample.jpg", False),
])
def test_only_label_studio_media_paths_get_the_token(requests_mock, reference, token):
    """Issue 20, finding 6: a task (or a forged import event) naming a Label Studio API path made the
    backend fetch it with the token. Downloads carry it to media paths only; others go without."""
    requests_mock.get(re.compile(re.escape(LS) + "/.*"), content=rgb_png())
    ImageLoader(SETTINGS).load(reference)
    assert ("Authorization" in requests_mock.last_request.headers) is token, requests_mock.last_request.url


def test_media_paths_are_read_under_label_studio_urls_own_path(requests_mock):
    base = f"{LS}/label-studio"
    requests_mock.get(re.compile(re.escape(LS) + "/.*"), content=rgb_png())
    loader = ImageLoader(replace(SETTINGS, label_studio_url=base))
    loader.load("/data/upload/3/cat.png")
    assert requests_mock.last_request.url == f"{base}/data/upload/3/cat.png"
    assert "Authorization" in requests_mock.last_request.headers
    loader.load(f"{LS}/data/upload/3/dog.png")  # Label Studio's origin, outside its path
    assert "Authorization" not in requests_mock.last_request.headers


def test_cloud_uri_without_task_id_is_a_clear_error():
    with pytest.raises(ImageSourceError, match="task id"):
        ImageLoader(SETTINGS).load("gs://bucket/cat.png")


def test_relative_url_without_label_studio_url_says_what_to_set():
    with pytest.raises(ImageSourceError, match="LABEL_STUDIO_URL"):
        ImageLoader(Settings()).load("/data/upload/3/cat.png")


@pytest.mark.parametrize("reference", ["file:///etc/passwd", "images/cat.png", "C:\\images\\cat.png", "//host/x.png"])
def test_local_paths_and_unknown_schemes_are_rejected(reference):
    with pytest.raises(ImageSourceError, match="local file paths are not read"):
        ImageLoader(SETTINGS).load(reference)


def test_data_uri():
    data = rgb_png(4, 3)
    image = ImageLoader(Settings()).load("data:image/png;base64," + base64.b64encode(data).decode())
    assert image.array.shape == (3, 4, 3) and image.key == hashlib.sha1(data).hexdigest()
    with pytest.raises(ImageSourceError, match="base64"):
        ImageLoader(Settings()).load("data:image/png;base64,@@@")


def test_percent_encoded_data_uri():
    data = rgb_png(4, 3)
    image = ImageLoader(Settings()).load("data:image/png," + quote_from_bytes(data))
    assert image.array.shape == (3, 4, 3) and image.key == hashlib.sha1(data).hexdigest()


@pytest.mark.parametrize("uri, error, message", [
    ("data:image/png,%89PNG%0D%0A%ZZnot-an-image", NotAnImage, "not an image"),
    ("data:image/png", ImageSourceError, "no ','"),
    ("data:image/png," + "%00" * 40, ImageTooLarge, "over 39 bytes"),  # 120 characters, 40 bytes once decoded
    ("data:image/png," + "A" * 50, ImageTooLarge, "over 39 bytes"),  # 50 bytes: more than base64's 3/4 per character
])
def test_malformed_percent_encoded_data_uri_is_an_image_error(uri, error, message):
    with pytest.raises(error, match=message):
        ImageLoader(replace(Settings(), image_max_bytes=39)).load(uri)


# --- HTTP errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_label_studio_refusal_asks_for_a_personal_access_token(requests_mock, status):
    requests_mock.get(f"{LS}/data/upload/3/cat.png", status_code=status)
    with pytest.raises(ImageAuthError) as error:
        ImageLoader(SETTINGS).load("/data/upload/3/cat.png")
    message = str(error.value)
    assert str(status) in message and "LABEL_STUDIO_API_KEY" in message and "Personal Access Token" in message
    assert LEGACY_TOKEN not in message


def test_missing_key_is_named_in_the_refusal(requests_mock):
    requests_mock.get(f"{LS}/data/upload/3/cat.png", status_code=401)
    with pytest.raises(ImageAuthError, match="no LABEL_STUDIO_API_KEY is set"):
        ImageLoader(Settings(label_studio_url=LS)).load("/data/upload/3/cat.png")


def test_label_studio_login_page_is_reported_as_an_auth_problem(requests_mock):
    requests_mock.get(f"{LS}/data/upload/3/cat.png", text="<html>login</html>", headers={"Content-Type": "text/html"})
    with pytest.raises(ImageAuthError, match="login page"):
        ImageLoader(SETTINGS).load("/data/upload/3/cat.png")


def test_expired_presigned_url_error_hides_the_signature(requests_mock):
    url = "https://bucket.s3.amazonaws.com/cat.png?X-Amz-Signature=topsecret"
    requests_mock.get(url, status_code=403)
    with pytest.raises(ImageAuthError, match="could not be loaded; the reason is in the ML backend's log") as error:
        ImageLoader(replace(SETTINGS, image_url_allowlist=())).load(url)
    assert "topsecret" not in str(error.value) and "bucket.s3.amazonaws.com/cat.png" in str(error.value)
    assert "403" not in str(error.value)  # a foreign host's status stays out of answers
    assert "expired" in error.value.detail and "topsecret" not in error.value.detail

    with pytest.raises(ImageAuthError, match="expired") as error:  # an allowlisted host is described
        ImageLoader(replace(SETTINGS, image_url_allowlist=("*.s3.amazonaws.com",))).load(url)
    assert "topsecret" not in str(error.value)


def test_not_found(requests_mock):
    requests_mock.get("http://images.example/missing.png", status_code=404)
    with pytest.raises(ImageNotFound, match="404"):
        ImageLoader(SETTINGS).load("http://images.example/missing.png")


def test_server_error_and_unreachable_label_studio(requests_mock):
    requests_mock.get("http://images.example/a.png", status_code=502)
    with pytest.raises(ImageFetchError, match="502") as error:
        ImageLoader(SETTINGS).load("http://images.example/a.png")
    assert not error.value.transient, "another host's failure is about the task's image"
    requests_mock.get(f"{LS}/data/upload/a.png", exc=requests.ConnectionError("refused"))
    with pytest.raises(ImageFetchError, match="in Docker, localhost is the container") as error:
        ImageLoader(SETTINGS).load("/data/upload/a.png")
    assert error.value.transient, "Label Studio down: worth trying again later"
    requests_mock.get(f"{LS}/data/upload/b.png", status_code=502)
    with pytest.raises(ImageFetchError, match="502") as error:
        ImageLoader(SETTINGS).load("/data/upload/b.png")
    assert error.value.transient
    requests_mock.get(f"{LS}/data/upload/c.png", status_code=400)
    with pytest.raises(ImageFetchError, match="400") as error:
        ImageLoader(SETTINGS).load("/data/upload/c.png")
    assert not error.value.transient


def test_connect_timeout_and_slow_transfer_both_time_out(requests_mock):
    settings = replace(SETTINGS, image_timeout_s=0.1)
    requests_mock.get("http://images.example/a.png", exc=requests.ConnectTimeout("slow"))
    with pytest.raises(ImageTimeout, match="IMAGE_TIMEOUT"):
        ImageLoader(settings).load("http://images.example/a.png")
    # Every read is quick, but the whole transfer takes longer than the limit.
    requests_mock.get("http://images.example/b.png", body=SlowBody(total=10_000, delay_s=0.02))
    started = time.monotonic()
    with pytest.raises(ImageTimeout):
        ImageLoader(settings).load("http://images.example/b.png")
    assert time.monotonic() - started < 1.0


# --- limits ------------------------------------------------------------------------------------


def test_oversized_download_is_refused_by_header_and_while_streaming(requests_mock):
    settings = replace(SETTINGS, image_max_bytes=1000)
    requests_mock.get("http://images.example/big.png", content=b"x" * 10, headers={"Content-Length": "5000"})
    with pytest.raises(ImageTooLarge, match="5000 bytes"):
        ImageLoader(settings).load("http://images.example/big.png")
    stream = SlowBody(total=1_000_000)
    requests_mock.get("http://images.example/endless.png", body=stream)  # no Content-Length
    with pytest.raises(ImageTooLarge, match="IMAGE_MAX_BYTES"):
        ImageLoader(settings).load("http://images.example/endless.png")
    assert stream.remaining > 900_000  # stopped reading soon after the limit


def test_too_many_pixels_is_refused_before_decoding(requests_mock, monkeypatch):
    requests_mock.get("http://images.example/wide.png", content=rgb_png(200, 100))
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1))
    with pytest.raises(ImageTooLarge, match="200x100"):
        ImageLoader(replace(SETTINGS, image_max_pixels=19_999)).load("http://images.example/wide.png")
    assert decoded == []


def test_non_image_and_truncated_image(requests_mock):
    requests_mock.get("http://images.example/a.txt", text="hello", headers={"Content-Type": "text/plain"})
    with pytest.raises(NotAnImage, match="not an image"):
        ImageLoader(SETTINGS).load("http://images.example/a.txt")
    jpeg = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "JPEG")
    requests_mock.get("http://images.example/cut.jpg", content=jpeg[: len(jpeg) // 2])
    with pytest.raises(NotAnImage, match="corrupt or truncated"):
        ImageLoader(SETTINGS).load("http://images.example/cut.jpg")


# --- decoding ----------------------------------------------------------------------------------


def test_exif_orientation_is_applied(requests_mock):
    # Stored 40 wide x 20 high: left half red, right half blue. Orientation 6 = "rotate 90° clockwise
    # to display", so the natural image is 20 wide x 40 high with red on top.
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    requests_mock.get("http://images.example/rotated.jpg", content=encode(Image.fromarray(stored), "JPEG", exif=exif))

    array = ImageLoader(SETTINGS).load("http://images.example/rotated.jpg").array
    assert array.shape == (40, 20, 3)
    top, bottom = array[:15].reshape(-1, 3).mean(0), array[25:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 50
    assert bottom[2] > 200 and bottom[0] < 50


def test_pixel_modes_become_rgb_uint8(requests_mock):
    sixteen_bit = np.array([[0, 256, 65535]], np.uint16)
    cases = {
        "gray": (encode(Image.new("L", (3, 1), 77)), (77, 77, 77)),
        "rgba": (encode(Image.new("RGBA", (3, 1), (10, 20, 30, 0))), (10, 20, 30)),
        "palette": (
            encode(Image.new("RGB", (3, 1), (0, 153, 255)).convert("P")),
            (0, 153, 255),
        ),  # a web-palette colour
        "cmyk": (encode(Image.new("CMYK", (3, 1), (0, 0, 0, 0)), "JPEG"), (255, 255, 255)),
        "16bit": (encode(Image.fromarray(sixteen_bit)), None),
    }
    loader = ImageLoader(SETTINGS)
    for name, (data, first_pixel) in cases.items():
        requests_mock.get(f"http://images.example/{name}", content=data)
        array = loader.load(f"http://images.example/{name}").array
        assert array.dtype == np.uint8 and array.shape == (1, 3, 3), name
        if first_pixel is not None:
            assert np.abs(array[0, 0].astype(int) - first_pixel).max() <= 2, (name, array[0, 0])
    sixteen = loader.load("http://images.example/16bit").array
    assert sixteen[0, :, 0].tolist() == [0, 1, 255]


def test_loaded_arrays_are_read_only(requests_mock):
    requests_mock.get("http://images.example/a.png", content=rgb_png())
    with pytest.raises(ValueError):
        ImageLoader(SETTINGS).load("http://images.example/a.png").array[0, 0, 0] = 1


# --- cache -------------------------------------------------------------------------------------


def rgb_png_array_bytes() -> int:
    return 20 * 30 * 3  # the decoded rgb_png()


def test_decoded_images_are_cached_by_url_with_lru_eviction(requests_mock):
    for name in ("a", "b"):
        requests_mock.get(f"http://images.example/{name}.png", content=rgb_png())
    loader = ImageLoader(replace(SETTINGS, image_cache_bytes=rgb_png_array_bytes()))

    first = loader.load("http://images.example/a.png")
    assert loader.load("http://images.example/a.png") is first
    assert requests_mock.call_count == 1
    loader.load("http://images.example/b.png")  # evicts a
    loader.load("http://images.example/a.png")
    assert requests_mock.call_count == 3


def test_non_string_reference_is_a_clear_error():
    with pytest.raises(ImageSourceError, match="must be a string, not list"):
        ImageLoader(SETTINGS).load(["/data/upload/a.png"])


def jpeg_claiming(width: int, height: int) -> bytes:
    """A 16x16 JPEG whose frame header (SOF0) claims ``width`` x ``height``: about 600 bytes."""
    data = bytearray(encode(Image.new("RGB", (16, 16), (9, 9, 9)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's own, looser limit
def test_small_files_claiming_many_pixels_are_refused_from_the_header(requests_mock, monkeypatch):
    loader = ImageLoader(SETTINGS)  # the default limit: 50 Mpx
    requests_mock.get("http://images.example/claims.jpg", content=jpeg_claiming(10_000, 9_500))  # 95 Mpx
    png = bytearray(rgb_png(1, 1))
    png[16:24] = (30_000).to_bytes(4, "big") * 2  # IHDR claims 30000 x 30000
    png[29:33] = zlib.crc32(bytes(png[12:29])).to_bytes(4, "big")
    requests_mock.get("http://images.example/wide.png", content=bytes(png))
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(1))
    with pytest.raises(ImageTooLarge, match="10000x9500 pixels, over the limit of 50000000"):
        loader.load("http://images.example/claims.jpg")
    with pytest.raises(ImageTooLarge, match="IMAGE_MAX_PIXELS"):
        loader.load("http://images.example/wide.png")
    assert decoded == []
    assert Settings().image_max_pixels == 50_000_000


def test_the_cache_is_bounded_in_bytes_not_entries(requests_mock):
    for name, size in {"small": (10, 10), "big": (40, 40)}.items():
        requests_mock.get(f"http://images.example/{name}.png", content=rgb_png(*size))
    loader = ImageLoader(replace(SETTINGS, image_cache_bytes=3 * 10 * 10 * 3))  # three small images
    urls = [f"http://images.example/small.png?{i}" for i in range(4)]
    for url in urls:
        requests_mock.get(url, content=rgb_png(10, 10))
    for url in urls[:3]:
        loader.load(url)
    calls = requests_mock.call_count
    assert all(loader.load(url) for url in urls[:3]) and requests_mock.call_count == calls  # all three kept
    loader.load(urls[3])  # a fourth evicts the least recently used (the first)
    loader.load(urls[0])
    assert requests_mock.call_count == calls + 2
    big = loader.load("http://images.example/big.png")  # larger than the whole cache: not kept
    assert loader.load("http://images.example/big.png") is not big
    assert loader._cache.bytes <= 3 * 10 * 10 * 3


def test_a_jpeg_too_small_for_its_claimed_size_is_refused_before_decoding(requests_mock, monkeypatch):
    requests_mock.get("http://images.example/cut.jpg", content=jpeg_claiming(8000, 6000))  # 48 Mpx in ~600 bytes
    uniform = encode(Image.new("L", (2000, 1500), 0), "JPEG", progressive=True, optimize=True, quality=1)
    requests_mock.get("http://images.example/uniform.jpg", content=uniform)  # the smallest a real JPEG gets
    loader = ImageLoader(SETTINGS)
    assert loader.load("http://images.example/uniform.jpg").width == 2000
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(1))
    with pytest.raises(NotAnImage, match="truncated"):
        loader.load("http://images.example/cut.jpg")
    assert decoded == []
