"""A Label Studio project for the browser tests, set up through the REST API as its UI would:
the example labeling config, the backend connected as an interactive model (Basic Auth, extra
params), uploaded images, and fresh tasks on them."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from label_studio_sdk.converter.brush import decode_rle
from PIL import Image


@dataclass
class Project:
    api: object  # tests/support/ls_api.LabelStudioApi
    id: int
    ml_backend: int

    @classmethod
    def create(cls, api, title: str, label_config: str, backend, extra_params: dict | None = None) -> "Project":
        project = api.post("/api/projects/", json={"title": title, "label_config": label_config})
        ml = api.post("/api/ml/", json={
            "project": project["id"], "url": backend.url, "title": "segmentation assist", "is_interactive": True,
            "auth_method": "BASIC_AUTH", "basic_auth_user": backend.auth[0], "basic_auth_pass": backend.auth[1],
            "extra_params": extra_params or {},
        })
        state = api.get(f"/api/ml/{ml['id']}")
        assert state["readable_state"] == "Connected", f"backend not connected: {state.get('error_message')}"
        return cls(api, project["id"], ml["id"])

    def upload(self, name: str, image: np.ndarray) -> str:
        """Uploads an (H, W, 3) uint8 RGB image as PNG; returns its URL in Label Studio (the task data)."""
        png = io.BytesIO()
        Image.fromarray(image).save(png, "PNG")
        upload = self.api.post(f"/api/projects/{self.id}/import?return_task_ids=true",
                               files={name: (name, png.getvalue(), "image/png")})
        (task,) = upload["task_ids"]
        return self.api.get(f"/api/tasks/{task}")["data"]["image"]

    def new_task(self, image_url: str) -> int:
        """A fresh task on an uploaded image (tasks sharing an image share the backend's SAM embedding)."""
        created = self.api.post(f"/api/projects/{self.id}/import?return_task_ids=true", json=[{"image": image_url}])
        (task,) = created["task_ids"]
        return task

    def annotation(self, annotation_id: int) -> list[dict]:
        """The saved annotation's result, as the API returns it."""
        return self.api.get(f"/api/annotations/{annotation_id}")["result"]


def decoded_mask(region: dict) -> np.ndarray:
    """The (H, W) bool mask of a brush result, decoded as PROTOCOL.md says."""
    height, width = region["original_height"], region["original_width"]
    return decode_rle(region["value"]["rle"]).reshape(height, width, 4)[:, :, 3] > 0


def regions_by_id(result: list[dict]) -> dict[str, list[dict]]:
    """The annotation's results grouped by region id (a region may carry several results)."""
    grouped: dict[str, list[dict]] = {}
    for item in result:
        grouped.setdefault(item["id"], []).append(item)
    return grouped


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0
