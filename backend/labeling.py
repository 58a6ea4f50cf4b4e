"""The project's labeling config, as far as segmentation assist needs it.

The backend reads one ``<Image>`` and the controls attached to it:

- ``<BrushLabels>`` and/or ``<PolygonLabels>``: where masks go. Every returned mask is a region of
  a mask control carrying a label of the same name as the prompt's label: a brush mask, or
  polygons. When controls of both kinds carry the label, the project chooses
  (``backend.mask_output``); among controls of one kind the first in the config wins.
- ``<RectangleLabels>``: box prompts.
- ``<KeyPointLabels>``: a control whose ``name`` starts with the extreme-tool prefix
  (``settings.extreme_tool_prefix``, env ``EXTREME_TOOL_PREFIX``, default ``"extreme"``) collects
  extreme points (4 per object); any other KeyPointLabels control is a click tool
  (positive clicks, Alt+click = negative).

Example::

    <View>
      <Image name="image" value="$image"/>
      <BrushLabels name="mask" toName="image"><Label value="Car"/><Label value="Person"/></BrushLabels>
      <KeyPointLabels name="extreme" toName="image" smart="true"><Label value="Car"/></KeyPointLabels>
      <KeyPointLabels name="click" toName="image" smart="true"><Label value="Car"/></KeyPointLabels>
      <RectangleLabels name="box" toName="image" smart="true"><Label value="Car"/></RectangleLabels>
    </View>

A config the backend cannot serve raises ``LabelingError`` with a message meant for the user.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import Enum

from label_studio_sdk.label_interface import LabelInterface


class LabelingError(ValueError):
    """The labeling config cannot be served; the message says what to change."""


class MaskKind(str, Enum):
    """A mask control's kind; ``region_type`` is its regions' ``type``."""

    BRUSH = "brush"  # BrushLabels -> an RLE mask per prompt
    POLYGON = "polygon"  # PolygonLabels -> a polygon per connected part of the mask

    @property
    def region_type(self) -> str:
        return f"{self.value}labels"


_MASK_TAGS = {"brushlabels": MaskKind.BRUSH, "polygonlabels": MaskKind.POLYGON}


@dataclass(frozen=True)
class MaskTool:
    """A BrushLabels or PolygonLabels control on the image. ``name`` is its regions' ``from_name``."""

    name: str
    kind: MaskKind
    labels: tuple[str, ...]


class ToolKind(str, Enum):
    RECTANGLE = "rectangle"  # RectangleLabels -> box prompt
    CLICK = "click"  # KeyPointLabels -> positive/negative clicks
    EXTREME = "extreme"  # KeyPointLabels named with the extreme prefix -> 4 extreme points


@dataclass(frozen=True)
class PromptTool:
    """A control whose regions are prompts. ``name`` is the regions' ``from_name``."""

    name: str
    kind: ToolKind
    labels: tuple[str, ...]


@dataclass(frozen=True)
class LabelingConfig:
    """What the backend uses from a labeling config.

    image_name: the ``<Image>`` tag's name (the regions' ``to_name``).
    image_key: the task data key holding the image URL (``value="$image"`` -> ``"image"``).
    mask_tools: the BrushLabels and PolygonLabels controls on the image, by name, in config order.
    mask_tools_for_label: prompt label -> the mask controls carrying the same label (at most one
        per kind, the first in the config), in config order.
    tools: prompt controls by name.
    interface: the SDK's parsed config, for validating output regions.
    """

    image_name: str
    image_key: str
    mask_tools: dict[str, MaskTool]
    mask_tools_for_label: dict[str, tuple[MaskTool, ...]]
    tools: dict[str, PromptTool]
    interface: LabelInterface

    @property
    def mask_labels(self) -> frozenset[str]:
        """Every label of the mask controls (masks already on screen may carry any of them)."""
        return frozenset(label for tool in self.mask_tools.values() for label in tool.labels)

    def mask_tool(self, label: str, preferred: MaskKind) -> MaskTool:
        """The mask control that gets the masks of prompt label ``label``: the one of the
        ``preferred`` kind when both kinds carry the label. KeyError for a label no prompt tool has."""
        tools = self.mask_tools_for_label[label]
        return next((tool for tool in tools if tool.kind is preferred), tools[0])

    @classmethod
    def parse(cls, xml: str, extreme_tool_prefix: str = "extreme") -> "LabelingConfig":
        if not isinstance(xml, str) or not xml.strip():
            raise LabelingError("the labeling config is empty")
        try:
            interface = LabelInterface(xml)
        except Exception as exc:  # the SDK raises several types for broken XML
            raise LabelingError(f"the labeling config is not valid XML: {exc}") from None
        controls = list(interface.controls or [])
        masks = [c for c in controls if c.tag.lower() in _MASK_TAGS]
        if not masks:
            raise LabelingError(
                "the labeling config has no <BrushLabels> or <PolygonLabels> control, so there is nowhere to put "
                'masks: add <BrushLabels name="mask" toName="image"> (or <PolygonLabels …>) with the same labels as '
                "your prompt tools"
            )
        image_name = _image_with_masks(interface, masks)
        image = interface.get_object(image_name)
        if image.attr.get("valueList"):
            raise LabelingError(f'<Image name="{image_name}"> uses valueList (several images per task); '
                                "segmentation assist supports one image per task")
        if not image.value_is_variable:
            raise LabelingError(f'<Image name="{image_name}"> must take its URL from the task, e.g. value="$image"')
        tools = _prompt_tools(controls, image_name, extreme_tool_prefix)
        mask_tools = {c.name: MaskTool(c.name, _MASK_TAGS[c.tag.lower()], tuple(c.labels or ()))
                      for c in masks if image_name in c.to_name}
        mask_tools_for_label = _mask_tools_for_label(mask_tools, tools)
        return cls(image_name, image.value_name, mask_tools, mask_tools_for_label, tools, interface)


def _image_with_masks(interface: LabelInterface, masks: list) -> str:
    images = {o.name for o in (interface.objects or []) if o.tag.lower() == "image"}
    targets = [name for mask in masks for name in mask.to_name if name in images]
    if not targets:
        raise LabelingError("the labeling config's <BrushLabels>/<PolygonLabels> is not attached (toName) to an "
                            "<Image> tag")
    if len(set(targets)) > 1:
        raise LabelingError(f"<BrushLabels>/<PolygonLabels> controls are attached to several images "
                            f"({', '.join(sorted(set(targets)))}); segmentation assist supports one image per task")
    return targets[0]


def _prompt_tools(controls: list, image_name: str, extreme_tool_prefix: str) -> dict[str, PromptTool]:
    tools = {}
    for control in controls:
        tag = control.tag.lower()
        if image_name not in control.to_name or tag not in ("rectanglelabels", "keypointlabels"):
            continue
        if tag == "rectanglelabels":
            kind = ToolKind.RECTANGLE
        elif extreme_tool_prefix and control.name.startswith(extreme_tool_prefix):
            kind = ToolKind.EXTREME
        else:
            kind = ToolKind.CLICK
        tools[control.name] = PromptTool(control.name, kind, tuple(control.labels or ()))
    if not tools:
        raise LabelingError(
            f'the labeling config has no prompt tool on <Image name="{image_name}">: add a <RectangleLabels> (boxes), '
            f'a <KeyPointLabels> (clicks) or a <KeyPointLabels name="{extreme_tool_prefix}…"> (extreme points)'
        )
    return tools


def _mask_tools_for_label(mask_tools: dict[str, MaskTool],
                          tools: dict[str, PromptTool]) -> dict[str, tuple[MaskTool, ...]]:
    """Prompt label -> the first mask control of each kind carrying the same label, in config order."""
    mapping: dict[str, tuple[MaskTool, ...]] = {}
    for tool in tools.values():
        if not tool.labels:
            raise LabelingError(f'<{_tag_name(tool.kind)} name="{tool.name}"> has no <Label> children')
        for label in tool.labels:
            firsts: list[MaskTool] = []
            for mask_tool in mask_tools.values():
                if label in mask_tool.labels and all(m.kind is not mask_tool.kind for m in firsts):
                    firsts.append(mask_tool)
            if not firsts:
                available = ", ".join(sorted({lab for m in mask_tools.values() for lab in m.labels})) or "none"
                raise LabelingError(
                    f'label "{label}" of <{_tag_name(tool.kind)} name="{tool.name}"> has no BrushLabels or '
                    f"PolygonLabels label of the same name (mask labels: {available}); masks are labeled with the "
                    "prompt's label"
                )
            mapping[label] = tuple(firsts)
    return mapping


def _tag_name(kind: ToolKind) -> str:
    return "RectangleLabels" if kind is ToolKind.RECTANGLE else "KeyPointLabels"


@functools.lru_cache(maxsize=8)
def parse_label_config(xml: str, extreme_tool_prefix: str) -> LabelingConfig:
    """``LabelingConfig.parse``, cached by the config's content: Label Studio sends the whole config
    with every /predict, every import event reads the project's stored one, and a large config takes
    seconds to parse. (The parsed config is read-only.) Every reader of a project's config uses it."""
    return LabelingConfig.parse(xml, extreme_tool_prefix)
