"""Labeling config parsing: tools, extreme prefix, label mapping and the errors users see."""

import pytest

from backend.labeling import LabelingConfig, LabelingError, MaskKind, MaskTool, ToolKind

CONFIG = """
<View>
  <Image name="image" value="$img"/>
  <BrushLabels name="mask" toName="image"><Label value="Car"/><Label value="Person"/><Label value="Sky"/></BrushLabels>
  <KeyPointLabels name="extreme" toName="image" smart="true"><Label value="Car"/></KeyPointLabels>
  <KeyPointLabels name="click" toName="image" smart="true"><Label value="Car"/><Label value="Person"/></KeyPointLabels>
  <RectangleLabels name="box" toName="image" smart="true"><Label value="Person"/></RectangleLabels>
  <Choices name="quality" toName="image"><Choice value="good"/></Choices>
</View>
"""


def test_finds_image_brush_and_prompt_tools():
    config = LabelingConfig.parse(CONFIG)
    assert config.image_name == "image"
    assert config.image_key == "img"
    assert config.mask_tools == {"mask": MaskTool("mask", MaskKind.BRUSH, ("Car", "Person", "Sky"))}
    assert config.mask_labels == {"Car", "Person", "Sky"}
    assert {name: tool.kind for name, tool in config.tools.items()} == {
        "extreme": ToolKind.EXTREME,
        "click": ToolKind.CLICK,
        "box": ToolKind.RECTANGLE,
    }
    assert config.tools["click"].labels == ("Car", "Person")
    assert {label: [t.name for t in tools] for label, tools in config.mask_tools_for_label.items()} == {
        "Car": ["mask"], "Person": ["mask"]}


def test_extreme_prefix_is_configurable():
    config = LabelingConfig.parse(CONFIG, extreme_tool_prefix="cl")
    assert config.tools["click"].kind is ToolKind.EXTREME
    assert config.tools["extreme"].kind is ToolKind.CLICK


def test_label_maps_to_the_brush_control_that_has_it():
    config = LabelingConfig.parse("""
    <View><Image name="im" value="$image"/>
      <BrushLabels name="things" toName="im"><Label value="Car"/></BrushLabels>
      <BrushLabels name="stuff" toName="im"><Label value="Road"/></BrushLabels>
      <RectangleLabels name="box" toName="im"><Label value="Car"/><Label value="Road"/></RectangleLabels>
    </View>""")
    assert config.mask_tool("Car", MaskKind.BRUSH).name == "things"
    assert config.mask_tool("Road", MaskKind.POLYGON).name == "stuff"  # no polygon control: the brush one


def test_polygon_labels_alone_are_a_mask_tool():
    config = LabelingConfig.parse("""
    <View><Image name="im" value="$image"/>
      <PolygonLabels name="outline" toName="im"><Label value="Car"/><Label value="Road"/></PolygonLabels>
      <KeyPointLabels name="extreme" toName="im" smart="true"><Label value="Car"/></KeyPointLabels>
    </View>""")
    assert config.mask_tools == {"outline": MaskTool("outline", MaskKind.POLYGON, ("Car", "Road"))}
    assert config.mask_tool("Car", MaskKind.BRUSH) == config.mask_tools["outline"]
    assert MaskKind.POLYGON.region_type == "polygonlabels"


def test_a_label_on_both_kinds_goes_to_the_preferred_one_and_the_first_of_each_kind():
    config = LabelingConfig.parse("""
    <View><Image name="im" value="$image"/>
      <PolygonLabels name="outline" toName="im"><Label value="Car"/></PolygonLabels>
      <BrushLabels name="paint" toName="im"><Label value="Car"/><Label value="Sky"/></BrushLabels>
      <PolygonLabels name="outline2" toName="im"><Label value="Car"/></PolygonLabels>
      <RectangleLabels name="box" toName="im"><Label value="Car"/><Label value="Sky"/></RectangleLabels>
    </View>""")
    assert [t.name for t in config.mask_tools_for_label["Car"]] == ["outline", "paint"]
    assert config.mask_tool("Car", MaskKind.BRUSH).name == "paint"
    assert config.mask_tool("Car", MaskKind.POLYGON).name == "outline"
    assert config.mask_tool("Sky", MaskKind.POLYGON).name == "paint"
    assert config.mask_labels == {"Car", "Sky"}


@pytest.mark.parametrize(
    "xml, message",
    [
        ("", "empty"),
        ("<View><Image name='i' value='$i'>", "not valid XML"),
        ("""<View><Image name="i" value="$i"/>
            <RectangleLabels name="b" toName="i"><Label value="Car"/></RectangleLabels></View>""",
         "no <BrushLabels> or <PolygonLabels>"),
        ("""<View><Image name="i" value="$i"/>
            <BrushLabels name="m" toName="i"><Label value="Car"/></BrushLabels>
            <RectangleLabels name="b" toName="i"><Label value="Car"/><Label value="Dog"/></RectangleLabels></View>""",
         'label "Dog" of <RectangleLabels name="b"> has no BrushLabels or PolygonLabels label of the same name '
         "(mask labels: Car)"),
        ("""<View><Image name="i" value="$i"/>
            <PolygonLabels name="p" toName="i"><Label value="Cat"/></PolygonLabels>
            <KeyPointLabels name="k" toName="i"><Label value="Dog"/></KeyPointLabels></View>""",
         '(mask labels: Cat)'),
        ("""<View><Image name="i" value="$i"/>
            <BrushLabels name="m" toName="i"><Label value="Car"/></BrushLabels></View>""",
         "no prompt tool"),
        ("""<View><Image name="i" valueList="$imgs"/>
            <BrushLabels name="m" toName="i"><Label value="Car"/></BrushLabels>
            <RectangleLabels name="b" toName="i"><Label value="Car"/></RectangleLabels></View>""",
         "valueList"),
        ("""<View><Text name="t" value="$t"/>
            <BrushLabels name="m" toName="t"><Label value="Car"/></BrushLabels></View>""",
         "not attached (toName) to an <Image>"),
    ],
)
def test_unservable_configs_get_a_clear_error(xml, message):
    with pytest.raises(LabelingError) as raised:
        LabelingConfig.parse(xml)
    assert message in str(raised.value)
