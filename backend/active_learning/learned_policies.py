"""Labeling policies learned from a project's annotations, without training: where the annotators'
masks differ from the model's in a way a policy of ``backend.policies`` fixes (holes filled, only
the largest part kept), the policy is adopted for that label.

Each candidate is decided per label on every annotated instance of the label: the parent model's
mask from the instance's exact extreme points, with the label's current policies and with the
candidate toggled, each against the annotator's mask. The paired per-instance gains go through the
model decision's paired bootstrap (``publish_decision``), and a policy changes only when the 95%
interval lies strictly above zero: instances the policy leaves alone add no evidence either way, so
a few masks that happen to gain decide nothing. Nothing is fitted, so scoring on the instances the
choice was made on is fair (two yes/no choices per label).

The learned policies travel with each version (``VersionInfo.policies``) and serve between the
server default and the project's extra params (``ProjectOptions.for_project``): what a person
configured wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backend.active_learning.publish_decision import PublishDecision, decide
from backend.policies import LabelPolicy
from backend.training.validation import iou

# (policy key, value when adopted), tried in this order.
CANDIDATES = (("fill_holes", True), ("keep_largest", True))
# A label with fewer annotated instances keeps its policies: a bootstrap over two or three instances
# that all gain has an interval above zero, and says little.
MIN_LABEL_INSTANCES = 6
METHOD = "paired bootstrap over the label's annotated instances, the parent model's masks"


@dataclass(frozen=True)
class PolicyChange:
    label: str
    key: str
    adopted: bool  # True: the policy is now on for the label; False: switched off
    decision: PublishDecision

    def as_result(self) -> dict:
        return {"label": self.label, "policy": self.key, "adopted": self.adopted,
                "miou_before": round(self.decision.miou_before, 4), "miou_after": round(self.decision.miou_after, 4),
                **self.decision.as_result()}

    def summary(self) -> str:
        verb = "adopted" if self.adopted else "dropped"
        return (f"{self.key} {verb} for {self.label} (mIoU {self.decision.miou_before:.4f} -> "
                f"{self.decision.miou_after:.4f}; {self.decision.summary()})")


@dataclass(frozen=True)
class LearnedPolicies:
    policies: dict[str, dict]  # {label: {policy key: value}}
    changes: list[PolicyChange]
    miou_before: float  # every instance, the parent's masks under the parent's learned policies
    miou_after: float  # the same under these

    def as_result(self) -> dict:
        return {"policies": self.policies, "policy_changes": [change.as_result() for change in self.changes]}

    def summary(self) -> str:
        return "; ".join(f"learned: {change.summary()}" for change in self.changes)


def learn_policies(current: dict[str, dict], masks: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                   labels: Sequence[str]) -> LearnedPolicies:
    """The policies learned by trying each candidate on each label's instances, starting from
    ``current`` (the parent version's; labels with fewer than MIN_LABEL_INSTANCES keep theirs).

    ``masks[i]``: the parent model's mask of instance i; ``targets[i]``: the annotator's; ``labels[i]``: its label."""
    if not len(masks) == len(targets) == len(labels):
        raise ValueError(f"need one mask, target and label per instance, got {len(masks)}, {len(targets)}, {len(labels)}")
    learned = {label: dict(entry) for label, entry in current.items()}
    changes = []
    for label in sorted(set(labels)):
        instances = [i for i, name in enumerate(labels) if name == label]
        if len(instances) < MIN_LABEL_INSTANCES:
            continue
        for key, value in CANDIDATES:
            entry = learned.get(label, {})
            toggled = {k: v for k, v in entry.items() if k != key} if key in entry else {**entry, key: value}
            decision = decide(_ious(entry, instances, masks, targets), _ious(toggled, instances, masks, targets), METHOD)
            if decision.ci95[0] > 0.0:
                learned[label] = toggled
                changes.append(PolicyChange(label, key, key in toggled, decision))
    learned = {label: entry for label, entry in learned.items() if entry}
    before, after = (policy_ious(policies, masks, targets, labels) for policies in (current, learned))
    return LearnedPolicies(learned, changes, float(np.mean(before or [0.0])), float(np.mean(after or [0.0])))


def policy_ious(policies: dict[str, dict], masks: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                labels: Sequence[str]) -> list[float]:
    """Each instance's IoU once its label's learned policies are applied to its mask (as serving does)."""
    return [_ious(policies.get(label, {}), [i], masks, targets)[0] for i, label in enumerate(labels)]


def describe(policies: dict[str, dict]) -> str:
    """Learned policies in words: "Cat: fill_holes; Dog: fill_holes + keep_largest", or "none"."""
    return "; ".join(f"{label}: {' + '.join(entry)}" for label, entry in sorted(policies.items())) or "none"


def _ious(entry: dict, instances: Sequence[int], masks, targets) -> list[float]:
    policy = LabelPolicy(**entry)
    return [iou(policy.clean(masks[i]), np.asarray(targets[i], bool)) for i in instances]
