"""The project's labeling config, as far as segmentation assist needs it.

The backend reads one ``<Image>`` and the controls attached to it:

- ``<BrushLabels>``: where masks go. Every returned mask is a BrushLabels region whose label
  has the same name as the prompt's label.
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

from dataclasses import dataclass
from enum import Enum

from label_studio_sdk.label_interface import LabelInterface


class LabelingError(ValueError):
    """The labeling config cannot be served; the message says what to change."""


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
    brush_for_label: prompt label -> name of the BrushLabels control that has the same label.
    brush_names: the BrushLabels controls on the image.
    brush_labels: every label of those controls (masks may carry any of them).
    tools: prompt controls by name.
    interface: the SDK's parsed config, for validating output regions.
    """

    image_name: str
    image_key: str
    brush_for_label: dict[str, str]
    brush_names: frozenset[str]
    brush_labels: frozenset[str]
    tools: dict[str, PromptTool]
    interface: LabelInterface

    @classmethod
    def parse(cls, xml: str, extreme_tool_prefix: str = "extreme") -> "LabelingConfig":
        if not isinstance(xml, str) or not xml.strip():
            raise LabelingError("the labeling config is empty")
        try:
            interface = LabelInterface(xml)
        except Exception as exc:  # the SDK raises several types for broken XML
            raise LabelingError(f"the labeling config is not valid XML: {exc}") from None
        controls = list(interface.controls or [])
        brushes = [c for c in controls if c.tag.lower() == "brushlabels"]
        if not brushes:
            raise LabelingError(
                "the labeling config has no <BrushLabels> control, so there is nowhere to put masks: add "
                '<BrushLabels name="mask" toName="image"> with the same labels as your prompt tools'
            )
        image_name = _image_with_brush(interface, brushes)
        image = interface.get_object(image_name)
        if image.attr.get("valueList"):
            raise LabelingError(f'<Image name="{image_name}"> uses valueList (several images per task); '
                                "segmentation assist supports one image per task")
        if not image.value_is_variable:
            raise LabelingError(f'<Image name="{image_name}"> must take its URL from the task, e.g. value="$image"')
        tools = _prompt_tools(controls, image_name, extreme_tool_prefix)
        attached = [b for b in brushes if image_name in b.to_name]
        brush_for_label = _brush_for_label(attached, tools)
        brush_names = frozenset(b.name for b in attached)
        brush_labels = frozenset(label for b in attached for label in (b.labels or ()))
        return cls(image_name, image.value_name, brush_for_label, brush_names, brush_labels, tools, interface)


def _image_with_brush(interface: LabelInterface, brushes: list) -> str:
    images = {o.name for o in (interface.objects or []) if o.tag.lower() == "image"}
    targets = [name for brush in brushes for name in brush.to_name if name in images]
    if not targets:
        raise LabelingError("the labeling config's <BrushLabels> is not attached (toName) to an <Image> tag")
    if len(set(targets)) > 1:
        raise LabelingError(f"<BrushLabels> controls are attached to several images "
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


def _brush_for_label(attached: list, tools: dict[str, PromptTool]) -> dict[str, str]:
    """Prompt label -> BrushLabels control carrying the same label (the first one, if several do)."""
    mapping: dict[str, str] = {}
    for tool in tools.values():
        if not tool.labels:
            raise LabelingError(f'<{_tag_name(tool.kind)} name="{tool.name}"> has no <Label> children')
        for label in tool.labels:
            brush = next((b.name for b in attached if label in (b.labels or ())), None)
            if brush is None:
                available = ", ".join(sorted({lab for b in attached for lab in (b.labels or ())})) or "none"
                raise LabelingError(
                    f'label "{label}" of <{_tag_name(tool.kind)} name="{tool.name}"> has no BrushLabels label of '
                    f"the same name (BrushLabels labels: {available}); masks are labeled with the prompt's label"
                )
            mapping[label] = brush
    return mapping


def _tag_name(kind: ToolKind) -> str:
    return "RectangleLabels" if kind is ToolKind.RECTANGLE else "KeyPointLabels"
