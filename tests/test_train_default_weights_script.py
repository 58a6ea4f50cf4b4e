"""The prepared GPU run for new default weights works end to end, here with a handful of CPU steps."""

import json
import os
import subprocess
import sys
from pathlib import Path

from backend.networks.weights import load_weights

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "train_default_weights.sh"


def test_the_script_fine_tunes_the_committed_weights_into_a_loadable_weights_dir(tmp_path):
    out = tmp_path / "weights"
    env = {**os.environ, "PYTHON": sys.executable, "WORK_DIR": str(tmp_path / "work")}
    quick = ["--device", "cpu", "--steps", "2", "--batch-size", "2", "--workers", "0", "--eval-every", "2",
             "--val-synthetic", "2", "--report", "2", "--threads", "1"]
    subprocess.run([str(SCRIPT), str(out), *quick], env=env, check=True, capture_output=True, timeout=600)
    assert sorted(path.name for path in out.iterdir()) == ["coarse.pt", "manifest.json", "refine.pt", "train.log"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == "v7-clicks" and manifest["training"]["steps"] == 2
    assert manifest["training"]["corrections"] == 0.6 and len(manifest["validation"]["miou_extreme_after_clicks"]) == 4
    assert "--init model_weights/extreme" in manifest["command"] and "validation" in manifest
    load_weights(out)  # sha256-verified, both stages
    assert (tmp_path / "work" / "checkpoint.pt").is_file()  # stays behind, not copied
