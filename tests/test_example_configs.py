"""The shipped labeling configs: the default one has no tool a backend without SAM cannot serve
(a CPU-only newcomer meets no dead tool); the SAM one adds clicks, which need SAM."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.labeling import LabelingConfig, ToolKind
from backend.routing import tools_not_served
from backend.segmenter_set import SegmenterSet

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
WITHOUT_SAM = SegmenterSet(extreme=object(), extreme_version="v")
WITH_SAM = SegmenterSet(sam=object(), extreme=object(), sam_name="sam-vit_b", extreme_version="v")


def parse(name: str) -> LabelingConfig:
    return LabelingConfig.parse((EXAMPLES / name).read_text())


def test_the_default_config_is_fully_served_without_sam():
    config = parse("labeling_config.xml")
    assert {tool.kind for tool in config.tools.values()} == {ToolKind.EXTREME, ToolKind.RECTANGLE}
    assert tools_not_served(config, WITHOUT_SAM) == {}


def test_the_sam_config_adds_clicks_which_need_sam():
    config = parse("labeling_config_sam.xml")
    assert {tool.kind for tool in config.tools.values()} == {ToolKind.EXTREME, ToolKind.RECTANGLE, ToolKind.CLICK}
    assert tools_not_served(config, WITH_SAM) == {}
    not_served = tools_not_served(config, WITHOUT_SAM)
    assert list(not_served) == ["clicks"]
    assert not_served["clicks"].startswith("click tool: SAM (set SAM_CHECKPOINT) is not loaded")


@pytest.mark.parametrize("name", ["labeling_config.xml", "labeling_config_sam.xml"])
def test_nothing_is_served_without_any_model(name):
    config = parse(name)
    assert set(tools_not_served(config, SegmenterSet())) == set(config.tools)


def test_a_misnamed_extreme_point_tool_is_told_both_fixes():
    """A KeyPointLabels not named with the extreme prefix is a click tool: without SAM it cannot be
    served, and the message also says how to make it an extreme-point tool."""
    xml = (EXAMPLES / "labeling_config.xml").read_text().replace('name="extreme_points"', 'name="corners"')
    config = LabelingConfig.parse(xml, "extreme")
    why = tools_not_served(config, WITHOUT_SAM, "extreme")["corners"]
    assert why.startswith("click tool: SAM (set SAM_CHECKPOINT) is not loaded")
    assert 'rename it to start with "extreme" (EXTREME_TOOL_PREFIX), e.g. "extreme_points"' in why
    # With no model at all renaming would not help, so it is not suggested.
    assert "rename" not in tools_not_served(config, SegmenterSet(), "extreme")["corners"]
