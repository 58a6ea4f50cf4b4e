"""Project options: declared once, parsed once per source (a project's /setup, the server default at
start-up), merged server default first, the project's own winning key by key."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from segmentation_fakes import make_app, setup_body

from backend.app import create_app
from backend.labeling import MaskKind
from backend.policies import LabelPolicy
from backend.project_options import OptionError, ProjectOptions
from backend.project_store import ProjectSetup, ProjectStore
from backend.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_every_extra_param_is_declared_with_its_default():
    assert ProjectOptions.keys() == ["policies", "keep_extreme_points", "mask_type", "polygon_tolerance_px",
                                     "preannotate_on_import", "proposals", "proposal_threshold"]
    defaults = ProjectOptions()
    assert defaults.given == frozenset()
    assert defaults.policies.labels == set() and defaults.policies.for_label("Car") == LabelPolicy()
    assert (defaults.keep_extreme_points, defaults.mask_type, defaults.polygon_tolerance_px,
            defaults.preannotate_on_import, defaults.proposals, defaults.proposal_threshold) == (
        False, MaskKind.BRUSH, 1.0, False, False, None)


def test_parsing_gives_each_option_its_type_and_records_what_was_set():
    options = ProjectOptions.parse('{"mask_type": "polygon", "polygon_tolerance_px": 2, "keep_extreme_points": true,'
                                   ' "policies": {"Car": {"fill_holes": 50}}}', "extra params")
    assert options.mask_type is MaskKind.POLYGON
    assert options.polygon_tolerance_px == 2.0 and isinstance(options.polygon_tolerance_px, float)
    assert options.keep_extreme_points is True and options.preannotate_on_import is False
    assert options.policies.for_label("Car") == LabelPolicy(fill_holes=50)
    assert options.given == {"mask_type", "polygon_tolerance_px", "keep_extreme_points", "policies"}
    for nothing in (None, "", {}, "{}"):
        assert ProjectOptions.parse(nothing, "extra params") == ProjectOptions()


@pytest.mark.parametrize("params, message", [
    ({"keep_extreme_points": "yes"}, 'extra params: "keep_extreme_points" must be true or false, got \'yes\''),
    ({"preannotate_on_import": 1}, 'extra params: "preannotate_on_import" must be true or false, got 1'),
    ({"mask_type": "outline"}, 'extra params: "mask_type" must be "brush" or "polygon", got \'outline\''),
    ({"mask_type": ["brush"]}, '"mask_type" must be "brush" or "polygon"'),
    ({"polygon_tolerance_px": -0.5}, '"polygon_tolerance_px" must be a number of pixels from 0 to 50, got -0.5'),
    ({"polygon_tolerance_px": 50.5}, '"polygon_tolerance_px" must be a number of pixels from 0 to 50'),
    ('{"polygon_tolerance_px": NaN}', '"polygon_tolerance_px" must be a number of pixels from 0 to 50, got nan'),
    ({"polygon_tolerance_px": True}, '"polygon_tolerance_px" must be a number'),
    ({"policies": {"Car": {"dilate_px": 101}}}, 'extra params: policies["Car"].dilate_px must be a whole number'),
    ({"policies": ["Car"]}, 'extra params: "policies" must be an object'),
    ([], "extra params must be a JSON object"),
    ("{nope", "extra params: not valid JSON"),
    ({"keep_extreme_points": "y" * 10_000}, "got 'yyyyyy"),
])
def test_bad_values_are_refused_naming_the_source_and_the_key(params, message):
    with pytest.raises(OptionError) as raised:
        ProjectOptions.parse(params, "extra params")
    assert message in str(raised.value)
    assert len(str(raised.value)) < 200  # a long value is not echoed whole


@pytest.mark.parametrize("params, message", [
    ({"preanotate_on_import": True}, 'unknown key "preanotate_on_import" (did you mean "preannotate_on_import"?)'),
    ({"keep_extreme_point": True}, 'unknown key "keep_extreme_point" (did you mean "keep_extreme_points"?)'),
    ({"colour": "red"}, 'unknown key "colour"; known: policies, keep_extreme_points, mask_type'),
    ({"polices": {}, "zzz": 1}, 'unknown keys "polices" (did you mean "policies"?), "zzz"; known:'),
])
def test_unknown_keys_are_refused_with_the_closest_known_one(params, message):
    with pytest.raises(OptionError, match="^POLICIES: ") as raised:
        ProjectOptions.parse(params, "POLICIES")
    assert message in str(raised.value)


def test_the_project_wins_key_by_key_over_the_server_default_and_policies_merge_per_label_and_key():
    default = ProjectOptions.parse({"mask_type": "polygon", "keep_extreme_points": True,
                                    "policies": {"*": {"fill_holes": True, "min_island_px": 50}}}, "POLICIES")
    project = ProjectOptions.parse({"keep_extreme_points": False, "polygon_tolerance_px": 0,
                                    "policies": {"*": {"min_island_px": 10}, "Car": {"keep_largest": True}}},
                                   "extra params")
    options = default.updated(project)
    assert options.mask_type is MaskKind.POLYGON  # the project does not set it: the server default stays
    assert options.keep_extreme_points is False and options.polygon_tolerance_px == 0.0
    assert options.preannotate_on_import is False  # nobody sets it: the default
    assert options.policies.for_label("Dog") == LabelPolicy(fill_holes=True, min_island_px=10)
    assert options.policies.for_label("Car") == LabelPolicy(fill_holes=True, min_island_px=10, keep_largest=True)
    assert project.updated(default).keep_extreme_points is True  # the last source wins


def test_a_project_is_served_the_server_default_under_what_its_setup_stored(tmp_path):
    default = ProjectOptions.parse({"preannotate_on_import": True, "mask_type": "polygon"}, "POLICIES")
    store = ProjectStore(tmp_path)
    store.save(ProjectSetup("7", "<View/>", {"preannotate_on_import": False}, "v1"))  # as /setup stores it
    stored = store.load("7")
    assert ProjectOptions.for_project(default, stored).preannotate_on_import is False
    assert ProjectOptions.for_project(default, stored).mask_type is MaskKind.POLYGON
    assert ProjectOptions.for_project(default, None) == default
    assert ProjectOptions.for_project(None, stored) == ProjectOptions.parse({"preannotate_on_import": False}, "x")
    assert ProjectOptions.for_project(None, None) == ProjectOptions()


def test_setup_stores_the_extra_params_as_an_object_even_when_sent_as_json_text(tmp_path):
    app, _, _ = make_app(tmp_path)
    assert app.test_client().post("/setup", json=setup_body('{"keep_extreme_points": true}')).status_code == 200
    assert json.loads((tmp_path / "projects" / "7" / "setup.json").read_text())["extra_params"] == \
        {"keep_extreme_points": True}


def test_the_server_default_is_parsed_at_start_up_from_policies_or_policies_file(tmp_path):
    assert Settings.from_env({}).default_options is None
    settings = Settings.from_env({"POLICIES": '{"keep_extreme_points": true}'})
    assert settings.default_options == ProjectOptions.parse({"keep_extreme_points": True}, "POLICIES")
    path = tmp_path / "policies.json"
    path.write_text('{"mask_type": "polygon"}')
    from_file = Settings.from_env({"POLICIES": '{"keep_extreme_points": true}', "POLICIES_FILE": str(path)})
    assert from_file.default_options.given == {"mask_type"}  # the file replaces POLICIES, as before


@pytest.mark.parametrize("env, message", [
    ({"POLICIES": '{"keep_extreme_points": "yes"}'}, 'POLICIES: "keep_extreme_points" must be true or false'),
    ({"POLICIES": '{"preanotate_on_import": true}'}, 'POLICIES: unknown key "preanotate_on_import" (did you mean'),
    ({"POLICIES": '{"policies": {"*": {"fill_holes": -1}}}'}, 'POLICIES: policies["*"].fill_holes must be'),
    ({"POLICIES": "[1]"}, "POLICIES must be a JSON object"),
    ({"POLICIES_FILE": "{dir}/missing.json"}, "POLICIES_FILE {dir}/missing.json: cannot be read (FileNotFoundError"),
    ({"POLICIES_FILE": "{dir}/bad.json"}, 'POLICIES_FILE {dir}/bad.json: "mask_type" must be "brush" or "polygon"'),
])
def test_a_bad_server_default_stops_the_start_naming_the_source_and_the_key(tmp_path, monkeypatch, env, message):
    (tmp_path / "bad.json").write_text('{"mask_type": "outline"}')
    env = {name: value.replace("{dir}", str(tmp_path)) for name, value in env.items()}
    with pytest.raises(OptionError) as raised:
        Settings.from_env(env)
    assert message.replace("{dir}", str(tmp_path)) in str(raised.value)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    with pytest.raises(OptionError, match="POLICIES"):  # before any model loads
        create_app()


@pytest.mark.slow
@pytest.mark.parametrize("preload", ["true", "false"])
def test_gunicorn_stops_on_a_bad_server_default_and_says_why(tmp_path, preload):
    env = {**os.environ, "MODEL_DIR": str(tmp_path), "PORT": "0", "PRELOAD": preload, "SAM_CHECKPOINT": "",
           "POLICIES": '{"keep_extreme_points": "yes", "preanotate_on_import": true}'}
    gunicorn = Path(sys.executable).parent / "gunicorn"
    process = subprocess.Popen([str(gunicorn), "backend.wsgi:app"], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # still serving: the bad default went unnoticed
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"gunicorn kept running with a bad POLICIES:\n{output[-2000:]}")
    assert process.returncode != 0
    assert 'cannot start: POLICIES: unknown key "preanotate_on_import" (did you mean "preannotate_on_import"?)' \
        in output
