"""How a project's finished masks become Label Studio regions: a brush mask, or polygons.

A mask goes to the mask control carrying its prompt's label (``LabelingConfig.mask_tool``):

- **BrushLabels**: one brush region with the mask as it is (holes and all parts kept).
- **PolygonLabels**: one polygon region per 8-connected part of the mask (after the policies, so
  ``keep_largest`` and ``min_island_px`` decide which parts there are), following the part's outer
  outline within ``polygon_tolerance_px`` (``backend.polygons``). Label Studio polygons cannot
  hold holes, so a polygon covers its part's holes: ``fill_holes`` is implied.

Extra params (the ML connection's, over the server default ``POLICIES``, the last that sets a key wins):

- ``"mask_type": "brush" | "polygon"``: which control gets the masks of a label that both a
  BrushLabels and a PolygonLabels control carry; default ``"brush"`` (the mask exactly as the model
  made it). A label on one kind of control only always goes there.
- ``"polygon_tolerance_px"``: how far (px) a simplified polygon may stray from the mask's pixel
  outline; default 1.0, 0 keeps every pixel corner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from backend.labeling import LabelingConfig, MaskKind
from backend.polygons import mask_polygons, polygon_mask
from backend.prompts import Segmentation
from backend.protocol import region_from_mask, region_from_polygon

MASK_TYPE_KEY = "mask_type"
TOLERANCE_KEY = "polygon_tolerance_px"
DEFAULT_TOLERANCE_PX = 1.0
MAX_TOLERANCE_PX = 50.0


def check_mask_output(extra_params: dict, source: str = "extra params") -> None:
    """Raises ValueError naming the key when ``mask_type`` or ``polygon_tolerance_px`` is malformed."""
    if MASK_TYPE_KEY in extra_params and extra_params[MASK_TYPE_KEY] not in {kind.value for kind in MaskKind}:
        raise ValueError(f'{source}: "{MASK_TYPE_KEY}" must be "brush" or "polygon", '
                         f"got {extra_params[MASK_TYPE_KEY]!r}")
    if TOLERANCE_KEY in extra_params:
        tolerance = extra_params[TOLERANCE_KEY]
        if (isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance)
                or not 0 <= tolerance <= MAX_TOLERANCE_PX):
            raise ValueError(f'{source}: "{TOLERANCE_KEY}" must be a number of pixels from 0 to '
                             f"{MAX_TOLERANCE_PX:g}, got {tolerance!r}")


@dataclass(frozen=True)
class MaskOutput:
    """A project's choice of mask regions (see the module docstring)."""

    preferred: MaskKind = MaskKind.BRUSH
    tolerance_px: float = DEFAULT_TOLERANCE_PX

    @classmethod
    def from_extra_params(cls, *extra_params: dict | None) -> "MaskOutput":
        """From checked extra-params dicts (``check_mask_output``), e.g. the server default, then the project's."""
        output = cls()
        for params in extra_params:
            if params and MASK_TYPE_KEY in params:
                output = replace(output, preferred=MaskKind(params[MASK_TYPE_KEY]))
            if params and TOLERANCE_KEY in params:
                output = replace(output, tolerance_px=float(params[TOLERANCE_KEY]))
        return output

    def regions(self, segmentation: Segmentation, config: LabelingConfig,
                image_rotation: int) -> list[tuple[dict, Segmentation]]:
        """The regions for one finished segmentation, each with the segmentation of what it covers
        (for a polygon: its part, as the polygon rasterises)."""
        tool = config.mask_tool(segmentation.label, self.preferred)
        common = dict(label=segmentation.label, from_name=tool.name, to_name=config.image_name,
                      score=segmentation.score, image_rotation=image_rotation, model=segmentation.model)
        if tool.kind is MaskKind.BRUSH:
            return [(region_from_mask(segmentation.mask, **common), segmentation)]
        height, width = segmentation.mask.shape
        return [(region_from_polygon(points, width, height, **common),
                 replace(segmentation, mask=polygon_mask(points, width, height)))
                for points in mask_polygons(segmentation.mask, self.tolerance_px)]

