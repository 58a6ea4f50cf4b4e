"""Where a project's proposal training starts: the class-agnostic base, or a previous version.

The base (``model_weights/proposals``, made by ``python -m backend pretrain-proposals``) is a proposal
model with one label, ``object``, pretrained on the synthetic generator: it already knows
objectness, box regression and centre-ness, which a handful of annotated tasks cannot teach an
ImageNet encoder with a fresh FPN and head. A project's detector takes every weight from it, and
each of the project's labels starts as the base's ``object`` classifier row; the labels then learn
apart. Without base weights (the folder absent) training starts from the ImageNet encoder, as
before the base existed, and says so in the log.
"""

from __future__ import annotations

import logging
from pathlib import Path

from backend.proposals.model import MANIFEST, ProposalModel, ProposalWeightsError

logger = logging.getLogger(__name__)

BASE_LABEL = "object"
_CLASS_ROWS = ("head.classification_head.cls_logits.weight", "head.classification_head.cls_logits.bias")


def load_base(base_dir: str | Path | None, device: str = "cpu") -> ProposalModel | None:
    """The base model in ``base_dir`` (sha256-checked), or None (logged) when there is none there;
    raises ProposalWeightsError for a folder with a manifest that is broken, tampered with or not a base."""
    if base_dir is None:
        return None
    base_dir = Path(base_dir)
    if not (base_dir / MANIFEST).is_file():
        logger.info("no base proposal weights in %s: a project's proposal model starts from the ImageNet encoder",
                    base_dir)
        return None
    base = ProposalModel.load(base_dir, device)
    if base.labels != (BASE_LABEL,):
        raise ProposalWeightsError(f"{base_dir} is no class-agnostic base: its labels are {list(base.labels)}, "
                                   f"not [{BASE_LABEL!r}]")
    return base


def start_from(detector, source: ProposalModel, labels: list[str]) -> None:
    """Load ``source``'s weights into ``detector`` (built for ``labels``, with ``source.config``).
    Classifier rows: a label ``source`` knows keeps its row; from the base, every label starts as
    its ``object`` row; a label new to a previous version starts from the fresh head's prior."""
    state = source.detector.state_dict()
    own = detector.state_dict()
    is_base = source.labels == (BASE_LABEL,)
    for key in _CLASS_ROWS:
        rows = own[key].clone()
        for index, label in enumerate(labels):
            if label in source.labels:
                rows[index + 1] = state[key][source.labels.index(label) + 1]
            elif is_base:
                rows[index + 1] = state[key][1]
        state[key] = rows
    detector.load_state_dict(state)
