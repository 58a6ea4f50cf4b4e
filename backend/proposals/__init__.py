"""Per-project proposal models: find the objects of a project's labels in an image, learned from its
annotated tasks (issue 18). torchvision's FCOS on the bundled ImageNet EfficientNet-Lite0 + FPN.

The interface (stable; the serving, jobs and versions side builds on exactly this):

- ``Proposal(label: str, box: (x0, y0, x1, y1) natural px, score: float, extreme_points: (4, 2) px | None)``
  — ``score`` is calibrated on held-out tasks: the probability the proposal is a correct one;
  this model predicts boxes only, so ``extreme_points`` is None (feed the box to SAM or to the
  extreme-point model's box mode).
- ``ProposalModel.load(weights_dir, device="cpu") -> ProposalModel`` (sha256-checked; raises
  ``ProposalWeightsError``); ``.labels`` (tuple), ``.threshold``, ``.manifest``;
  ``.propose(image: LoadedImage, threshold=None, max_objects=MAX_OBJECTS) -> list[Proposal]``: most
  confident first, one per object (suppression within and across labels, and of boxes lying mostly
  inside a more confident box of their label: parts), at most ``MAX_OBJECTS``
  (100).
- ``train_proposal_model(examples, labels, out_dir, *, heldout=(), init_dir=None, base_dir=None, steps=None,
  device=None, progress_cb=None, seed=0, provenance=None, mask_of=None) -> metrics``: ``examples`` and
  ``heldout`` are ``(image HxWx3 uint8, [(label, geometry), ...])`` with a geometry a mask (HxW
  bool), a box (x0, y0, x1, y1) or points (N, 2) (extreme points: their extent is the box); an
  image with no object is a true negative. Objects of labels not in ``labels``, empty or tiny ones
  and those beyond 100 per image are left out and counted in ``metrics["training"]``. With
  ``heldout`` the calibration and the threshold (best F1, pulled towards 0.3 on few objects) are fitted on it and
  ``metrics["heldout"]`` holds its recall, precision, f1, counts at that threshold. With ``mask_of(image,
  box) -> mask`` (how serving makes an object's mask) a labeller is fitted on the objects' masks
  (``labeller.py``) and gives the labels from then on: ``ProposalModel.relabelled(proposal, array,
  mask)`` once a proposal's mask is made. Weights and a
  manifest (format, labels, config, threshold, calibration, sha256, the metrics, ``provenance``)
  are written atomically, the manifest last. ``progress_cb(step, steps, {"loss", ...})``. Raises
  ``ProposalError`` when there is nothing to learn from. It starts from ``init_dir`` (a previous
  version), else from the class-agnostic base in ``base_dir`` (``base.load_base``: each label from
  its ``object`` row), else from the ImageNet encoder.
- ``evaluate_proposals(model, examples, threshold=None, mask_of=None) -> {recall, precision, f1, threshold, images,
  objects, proposals, correct, mean_box_iou, per_label}`` (IoU >= 0.5 with an object of the same
  label, greedy most confident first); ``choose_threshold(model, heldout, mask_of=None) -> float``
  (a model with a labeller needs ``mask_of``) (``heldout_threshold``).

Images of any size are resized so their longer side is ``DetectorConfig.long_side`` (512 px; a
model trained from the class-agnostic base, ``base.py``, has the base's: 384 px);
boxes come back in the caller's pixels. Torch threads are the caller's (``torch.set_num_threads``).
"""

from backend.proposals.annotations import MAX_OBJECTS, ProposalError
from backend.proposals.evaluate import choose_threshold, evaluate_proposals
from backend.proposals.model import Proposal, ProposalModel, ProposalWeightsError
from backend.proposals.train import train_proposal_model

__all__ = [
    "MAX_OBJECTS", "Proposal", "ProposalError", "ProposalModel", "ProposalWeightsError", "choose_threshold",
    "evaluate_proposals", "train_proposal_model",
]
