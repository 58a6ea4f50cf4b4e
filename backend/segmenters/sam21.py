"""SAM 2.1 (Meta's ``sam2`` package) as a model of ``backend.segmenters.sam.SamSegmenter``.

Follows ``sam2.sam2_image_predictor.SAM2ImagePredictor`` on single images: the image is *stretched*
to a ``image_size`` x ``image_size`` square (1024, no aspect kept, no padding), so x scales by
1024 / W and y by 1024 / H; a box goes to the prompt encoder as two points labelled 2 and 3 before
the clicks; the mask decoder also reads the encoder's two high-resolution feature maps; its
256 x 256 low-res logits cover the whole image and are resized bilinearly straight to the natural
size. The video memory (memory attention and encoder) is not used on single images.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sam2.build_sam import build_sam2
from sam2.modeling.sam2_base import SAM2Base
from torchvision.transforms import functional as TF

from backend.segmenters.sam_types import SAM_TYPES

# The ImageNet statistics SAM 2's encoder was trained with (sam2.utils.transforms.SAM2Transforms).
_PIXEL_MEAN, _PIXEL_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
class Sam21:
    """Image features: ``{"image_embed": (1, 256, 64, 64), "high_res_s0": (1, 32, 256, 256),
    "high_res_s1": (1, 64, 128, 128)}`` (float32, 16 MiB per image; SAM 1's embedding is 4 MiB)."""

    mask_threshold = 0.0

    def __init__(self, model: SAM2Base):
        self.model = model.eval()
        self._feature_shapes = _feature_shapes(model)  # fixed by the architecture

    @staticmethod
    def build(model_type: str) -> SAM2Base:
        """SAM 2.1 ``model_type`` with random weights, on the CPU, with the decoder settings of
        Meta's image predictor (a single mask falls back to the best proposal when unstable)."""
        return build_sam2(SAM_TYPES[model_type].config, ckpt_path=None, device="cpu", apply_postprocessing=True)

    @staticmethod
    def state_dict_of(checkpoint: dict) -> dict:
        return checkpoint["model"]  # the official files hold the state dict under "model"

    @staticmethod
    def model_name(model_type: str) -> str:
        return model_type.replace("_", "-", 1)  # "sam2.1_hiera_tiny" -> "sam2.1-hiera_tiny"

    @property
    def device(self) -> torch.device:
        return self.model.device

    def input_scale(self, height: int, width: int) -> np.ndarray:
        return np.array([self.model.image_size / width, self.model.image_size / height])

    def feature_shapes(self) -> dict[str, tuple]:
        return self._feature_shapes

    def encode(self, array: np.ndarray) -> dict[str, torch.Tensor]:
        # SAM2Transforms' steps (it would torch.jit.script them, which torch now warns about).
        pixels = torch.as_tensor(np.array(array), device=self.device).permute(2, 0, 1).float() / 255  # a writable copy
        size = [self.model.image_size] * 2
        pixels = TF.normalize(TF.resize(pixels, size, antialias=True), _PIXEL_MEAN, _PIXEL_STD)[None]
        # forward_image already applies the decoder's projections of the high-resolution maps.
        feature_maps = self.model.forward_image(pixels)["backbone_fpn"][-self.model.num_feature_levels :]
        image_embed = feature_maps[-1]
        if self.model.directly_add_no_mem_embed:  # a single image is a frame without memory
            image_embed = image_embed + self.model.no_mem_embed.reshape(1, -1, 1, 1)
        features = {"image_embed": image_embed}
        if self.model.use_high_res_features_in_sam:
            features["high_res_s0"], features["high_res_s1"] = feature_maps[0], feature_maps[1]
        return features

    def decode(self, features, box, points, labels, multimask, mask_input=None):
        coords, point_labels = [], []
        if box is not None:
            coords.append(box.reshape(2, 2))
            point_labels.append(torch.tensor([2, 3], device=box.device))
        if points is not None:
            coords.append(points)
            point_labels.append(labels)
        prompt_encoder = self.model.sam_prompt_encoder
        if mask_input is not None:  # what Meta's predictor hands back as the low-res logits to feed in
            mask_input = torch.clamp(mask_input, -32.0, 32.0)
        sparse, dense = prompt_encoder(
            points=(torch.cat(coords)[None], torch.cat(point_labels).int()[None]), boxes=None, masks=mask_input
        )
        high_res = [features[name] for name in ("high_res_s0", "high_res_s1") if name in features]
        low_res_logits, predicted_iou, _, _ = self.model.sam_mask_decoder(
            image_embeddings=features["image_embed"],
            image_pe=prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            repeat_image=False,
            high_res_features=high_res or None,
        )
        return low_res_logits, predicted_iou

    def upscale(self, low_res_logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return F.interpolate(low_res_logits.float(), (height, width), mode="bilinear", align_corners=False)


def _feature_shapes(model: SAM2Base) -> dict[str, tuple]:
    """What ``Sam21.encode`` returns: the embedding at the prompt encoder's size and, with high-res
    features, the two finer maps ``forward_image`` projects to the mask decoder's widths."""
    channels, (height, width) = model.sam_prompt_encoder.embed_dim, model.sam_prompt_encoder.image_embedding_size
    shapes = {"image_embed": (1, channels, height, width)}
    if model.use_high_res_features_in_sam:
        decoder = model.sam_mask_decoder
        shapes["high_res_s0"] = (1, decoder.conv_s0.out_channels, 4 * height, 4 * width)
        shapes["high_res_s1"] = (1, decoder.conv_s1.out_channels, 2 * height, 2 * width)
    return shapes
