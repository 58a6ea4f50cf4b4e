"""How a project's finished masks become Label Studio regions: a brush mask, or polygons.

A mask goes to the mask control carrying its prompt's label (``LabelingConfig.mask_tool``):

- **BrushLabels**: one brush region with the mask as it is (holes and all parts kept).
- **PolygonLabels**: one polygon region per 8-connected part of the mask (after the policies, so
  ``keep_largest`` and ``min_island_px`` decide which parts there are), following the part's outer
  outline within ``polygon_tolerance_px`` (``backend.polygons``). Label Studio polygons cannot
  hold holes, so a polygon covers its part's holes: ``fill_holes`` is implied.

Two project options (declared, with their defaults and ranges, in ``backend.project_options``) decide:

- ``"mask_type": "brush" | "polygon"``: which control gets the masks of a label that both a
  BrushLabels and a PolygonLabels control carry (by default the brush: the mask exactly as the
  model made it). A label on one kind of control only always goes there.
- ``"polygon_tolerance_px"``: how far (px) a simplified polygon may stray from the mask's pixel
  outline; 0 keeps every pixel corner.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from backend.labeling import LabelingConfig, MaskKind
from backend.polygons import mask_polygons, polygon_mask
from backend.prompts import Segmentation
from backend.protocol import region_from_mask, region_from_polygon


@dataclass(frozen=True)
class MaskOutput:
    """A project's choice of mask regions (see the module docstring): ``ProjectOptions.mask_type``
    and ``.polygon_tolerance_px``."""

    preferred: MaskKind
    tolerance_px: float

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

