"""Labeling config parsing: tools, extreme prefix, label mapping and the errors users see."""

import pytest

from backend.labeling import LabelingConfig, LabelingError, ToolKind

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
    assert config.brush_names == {"mask"}
    assert config.brush_labels == {"Car", "Person", "Sky"}
    assert {name: tool.kind for name, tool in config.tools.items()} == {
        "extreme": ToolKind.EXTREME,
        "click": ToolKind.CLICK,
        "box": ToolKind.RECTANGLE,
    }
    assert config.tools["click"].labels == ("Car", "Person")
    assert config.brush_for_label == {"Car": "mask", "Person": "mask"}


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
    assert config.brush_for_label == {"Car": "things", "Road": "stuff"}


@pytest.mark.parametrize(
    "xml, message",
    [
        ("", "empty"),
        ("<View><Image name='i' value='$i'>", "not valid XML"),
        ("""<View><Image name="i" value="$i"/>
            <RectangleLabels name="b" toName="i"><Label value="Car"/></RectangleLabels></View>""",
         "no <BrushLabels>"),
        ("""<View><Image name="i" value="$i"/>
            <BrushLabels name="m" toName="i"><Label value="Car"/></BrushLabels>
            <RectangleLabels name="b" toName="i"><Label value="Car"/><Label value="Dog"/></RectangleLabels></View>""",
         'label "Dog" of <RectangleLabels name="b"> has no BrushLabels label of the same name '
         "(BrushLabels labels: Car)"),
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
