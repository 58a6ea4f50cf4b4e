"""Objects a project's proposal model found -> masks, the way an annotator's prompts get them.

Each proposal (``backend.proposals.Proposal``: label, box, score, optional extreme points) becomes a
prompt of its label: its box (to SAM when SAM is loaded, else the extreme-point model's box mode),
or, without SAM, its predicted extreme points to the extreme-point model when it has them. The
caller segments it like any prompt and then applies the project's policies and mask output.

A model with a labeller (``backend.proposals.labeller``) labels each object from its mask: the
proposal's label is the labeller's once the mask is made (``relabel``).

One mask per object: proposals are taken most confident first, and one whose mask lies mostly
(``DUPLICATE_OVERLAP`` of the smaller mask) on a mask already taken — a prompt's, or a more
confident proposal's — is left out. So a task with prompts keeps its prompt masks, and proposals
only add the objects no prompt covers.

A region's score is the proposal's calibrated confidence times the segmenter's mask score: the
chance that there is an object of that label there, and that its mask is right.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

import numpy as np

from backend.prompts import LoadedImage, Prompt, PromptError, PromptKind, Segmentation
from backend.routing import EXTREME_POINTS, RoutingError, SegmenterChoice

# A mask lying this much (of the smaller mask's pixels) on a mask already taken is the same object.
DUPLICATE_OVERLAP = 0.5


@dataclass
class ProposalMasks:
    """The masks of a task's proposals; ``notes`` say which proposals were left out and why."""

    segmentations: list[Segmentation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    duplicates: int = 0


def proposal_prompt(proposal, segmenters: SegmenterChoice) -> Prompt:
    """The prompt an annotator would have given for ``proposal``."""
    points = proposal.extreme_points
    if segmenters.sam is None and segmenters.extreme is not None and points is not None \
            and np.asarray(points).shape == (EXTREME_POINTS, 2):
        return Prompt(PromptKind.EXTREME, proposal.label, points=np.asarray(points, np.float32),
                      point_labels=np.ones(EXTREME_POINTS, np.int64))
    return Prompt(PromptKind.BOX, proposal.label, box=tuple(float(v) for v in proposal.box))


def proposal_masks(proposals: Iterable, segment: Callable[[Prompt], Segmentation], segmenters: SegmenterChoice,
                   labels: Iterable[str], taken: list[np.ndarray] = (),
                   relabel: Callable[[object, np.ndarray], object] | None = None) -> ProposalMasks:
    """Masks for ``proposals`` (most confident first), each through ``segment(prompt)``; ``labels``:
    the labels the project's config can give masks (a proposal of another label is left out); ``taken``:
    the masks already in the answer (the task's prompts'), which no proposal may duplicate;
    ``relabel(proposal, mask)``: the proposal with its object's label (the model's labeller)."""
    labels = set(labels)
    out = ProposalMasks()
    taken = list(taken)
    for proposal in sorted(proposals, key=lambda p: -p.score):
        try:
            segmentation = segment(proposal_prompt(proposal, segmenters))
        except (RoutingError, PromptError) as exc:
            out.notes.append(f'skipped a proposal of "{proposal.label}": {exc}')
            continue
        if not segmentation.mask.any():
            continue
        if any(same_object(segmentation.mask, mask) for mask in taken):
            out.duplicates += 1
            continue
        if relabel is not None:  # after the duplicate check: labelling a duplicate is wasted time
            proposal = relabel(proposal, segmentation.mask)
        if proposal.label not in labels:
            out.notes.append(f'skipped a proposal of label "{proposal.label}", which the labeling config does not give masks')
            continue
        taken.append(segmentation.mask)
        out.segmentations.append(replace(
            segmentation, label=proposal.label, score=round(float(proposal.score) * float(segmentation.score), 4),
            model=f"{segmentation.model}, proposal {float(proposal.score):.2f}"))
    return out


def same_object(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two masks mostly cover one another (``DUPLICATE_OVERLAP`` of the smaller one)."""
    smaller = min(int(a.sum()), int(b.sum()))
    return smaller > 0 and int(np.logical_and(a, b).sum()) >= DUPLICATE_OVERLAP * smaller


def box_mask_of(segmenter) -> Callable[[np.ndarray, tuple], np.ndarray]:
    """``mask_of(image, box)`` for ``backend.proposals``: the object's mask from ``segmenter``'s box
    mode (the extreme-point model), as serving makes a proposal's mask without SAM."""
    def mask_of(image: np.ndarray, box: tuple) -> np.ndarray:
        prompt = Prompt(PromptKind.BOX, "object", box=tuple(float(v) for v in box))
        return segmenter.segment(LoadedImage(array=image, key="proposal-object"), prompt).mask
    return mask_of
