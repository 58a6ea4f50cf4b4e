"""One decoder: a picture gives the same natural pixels served (``ImageLoader``), in training data
(``read_image``) and in evaluation (``CocoObjects``) — EXIF orientation, 16-bit and alpha alike."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from backend.coco import CocoObjects
from backend.images import ImageLoader
from backend.pixels import read_image
from backend.settings import Settings


def picture(kind: str) -> tuple[bytes, str, tuple[int, int]]:
    """(file bytes, suffix, natural (width, height)) of a 6 x 4 picture stored in ``kind``."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    if kind == "16-bit":
        Image.fromarray(rng.integers(0, 65535, (4, 6), dtype=np.uint16)).save(buffer, format="PNG")
        return buffer.getvalue(), ".png", (6, 4)
    if kind == "rgba":
        Image.fromarray(rng.integers(0, 255, (4, 6, 4), dtype=np.uint8), "RGBA").save(buffer, format="PNG")
        return buffer.getvalue(), ".png", (6, 4)
    stored = Image.fromarray(rng.integers(0, 255, (4, 6, 3), dtype=np.uint8))
    exif = stored.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to show
    stored.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue(), ".jpg", (4, 6)


@pytest.mark.parametrize("kind", ["16-bit", "rgba", "exif-rotated"])
def test_serving_training_and_evaluation_decode_a_picture_alike(tmp_path, kind):
    data, suffix, (width, height) = picture(kind)
    path = tmp_path / f"picture{suffix}"
    path.write_bytes(data)
    served = ImageLoader(Settings()).load(f"data:image/{suffix[1:]};base64," + base64.b64encode(data).decode())
    trained = read_image(path)
    coco = tmp_path / "instances.json"
    coco.write_text(json.dumps({
        "images": [{"id": 1, "file_name": path.name, "width": width, "height": height}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 4, "bbox": [0, 0, 2, 2],
                         "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]}],
    }))
    [evaluated] = list(CocoObjects(coco, tmp_path))
    assert served.array.shape == (height, width, 3) and served.array.dtype == np.uint8
    assert np.array_equal(served.array, trained.array) and np.array_equal(served.array, evaluated.image.array)
    assert served.key == trained.key == evaluated.image.key  # the sha1 of the file: one embedding per picture
    if kind == "16-bit":
        high_byte = np.asarray(Image.open(io.BytesIO(data)), np.uint16) >> 8
        assert np.array_equal(served.array[..., 0], high_byte)


def test_an_unreadable_file_is_named(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        read_image(path)
