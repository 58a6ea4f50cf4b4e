#!/usr/bin/env bash
# New default weights for the extreme-point model, in one run on one GPU (an H200: about 7 minutes
# wall, under the device tool's 10-minute command limit): fine-tunes the committed weights
# (model_weights/extreme) on the current synthetic generator (backend.training.synthetic: thin
# 'tree' shapes, soft matte edges, objects cut by the frame, inlays vs holes) with simulated
# correction clicks on 60% of examples (backend.training.simulated_corrections: the click channels
# learn to add a missed part and remove a spill), and adds held-out figures (after 0-3 simulated
# clicks too) to the manifest. The weights files, the manifest and the log land in OUT_DIR; the
# optimizer checkpoint stays in a work folder under runs/ (too big to bring back from the device).
#
#   scripts/train_default_weights.sh OUT_DIR [python -m backend train options, overriding these]
#
# On the device machine (its python3 has torch, OpenCV and scikit-image, not efficientnet-lite):
#   here, once:  .venv/bin/pip download --no-deps --only-binary=:all: -d .whl efficientnet-lite-pytorch==0.1.0
#   run (carry [".whl"], timeout_s 600):
#     python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#     && scripts/train_default_weights.sh $OUT/weights
#   then, here: copy coarse.pt, refine.pt and manifest.json into model_weights/extreme, run
#   bench/quality.py (CPU, 1 thread) and put its tables in the README.
# Checked on a CPU with a handful of steps (seconds, not a model):
#   scripts/train_default_weights.sh /tmp/w --device cpu --steps 5 --batch-size 2 --workers 1 \
#     --eval-every 5 --val-synthetic 4 --report 4 --threads 1
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/train_default_weights.sh OUT_DIR [train options]}
shift
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
mkdir -p "$out" runs
work=${WORK_DIR:-$(mktemp -d runs/default-weights.XXXXXX)}  # WORK_DIR=<an earlier one> resumes its checkpoint

# Fail in seconds, not after the run: the generator's photos and the network code must be there.
"$python" -c "from backend.training.synthetic import generate_scene as g; g(0, 0, 'train'); g(0, 0, 'heldout')
import backend.networks.coarse"

# 1700 steps of 64 (109k scenes of a fresh stream, seed 9; seeds 0-5 made v4-synthetic, seed 6 a
# 55-step CPU trial of the click channels that did not help, seed 7 v5-clicks, seed 8 the committed
# v6-text: 3000 steps of 8 on a 2-core CPU, 55 minutes, with printed words among the shapes; this run
# gives the click channels and the words 4-5 times those examples)
# at the learning rate of the committed weights' second GPU stage; 14 loader workers feed the GPU.
# The click simulation costs about one more coarse forward pass per step: 1700 steps, not 2000.
PYTHONUNBUFFERED=1 "$python" -m backend train --synthetic 400000 --val-synthetic 100 \
  --init model_weights/extreme --steps 1700 --batch-size 64 --lr 6e-4 --seed 9 --corrections 0.6 \
  --device cuda --threads 2 --workers 14 --eval-every 850 --checkpoint-every 250 \
  --version v7-clicks --report 200 --out "$work" "$@" 2>&1 | tee "$out/train.log"
cp "$work/coarse.pt" "$work/refine.pt" "$work/manifest.json" "$out/"
echo "weights in $out"
