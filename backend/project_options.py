"""Project options: what a project's ML connection *extra params* may set, every option declared once.

Label Studio sends the extra params JSON (*Settings → Model → edit → Extra params*) with ``/setup``;
the server default has the same shape (env ``POLICIES`` as JSON, or the file ``POLICIES_FILE``).
Each source is parsed once: ``/setup``'s when it arrives (a bad one answers 422 naming the key),
the server default at start-up (``Settings.from_env``: a bad one stops the start, naming the key
and the source). A project is served the server default, the policies its serving version learned
from its annotations (``backend.active_learning.learned_policies``), then its own options over them
(``ProjectOptions.for_project``): every option the project sets wins, the policies per label and
policy key (``PolicySet.updated``).

An option is one field of ``ProjectOptions``, declared with ``option(parse, default)``: ``parse``
takes the JSON value and the option's name and returns the option's value, or raises ValueError
saying what the value must be.
"""

from __future__ import annotations

import difflib
import json
import math
import reprlib
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import Any, Callable

from backend.labeling import MaskKind
from backend.policies import PolicySet


class OptionError(ValueError):
    """Extra params (a project's, or the server default) that cannot be used; the message names
    the source and the key, and is safe to answer."""


def option(parse: Callable[[Any, str], Any], default, merge: Callable[[Any, Any], Any] | None = None):
    """Declares an option: ``parse(value, name)``, its default, and ``merge(earlier, later)`` for an
    option whose later source does not simply replace the earlier one's value."""
    return field(default=default, metadata={"parse": parse, "merge": merge})


def true_or_false(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f'"{name}" must be true or false, got {reprlib.repr(value)}')
    return value


def one_of(kinds: type[Enum]) -> Callable[[Any, str], Enum]:
    """A parser for one of the string values of ``kinds``."""
    def parse(value, name: str) -> Enum:
        for kind in kinds:
            if isinstance(value, str) and value == kind.value:
                return kind
        raise ValueError(f'"{name}" must be {" or ".join(_quoted(kind.value) for kind in kinds)}, '
                         f"got {reprlib.repr(value)}")
    return parse


def number(low: float, high: float, unit: str = "") -> Callable[[Any, str], float]:
    """A parser for a finite number from ``low`` to ``high``."""
    def parse(value, name: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value)
                                                                                 and low <= value <= high):
            raise ValueError(f'"{name}" must be a number{f" of {unit}" if unit else ""} from {low:g} to {high:g}, '
                             f"got {reprlib.repr(value)}")
        return float(value)
    return parse


@dataclass(frozen=True)
class ProjectOptions:
    """A project's options (README: Policies, Polygon projects, Pre-annotation jobs, Proposals)."""

    # Per-label mask policies (backend.policies): merged with earlier sources per label and policy key.
    policies: PolicySet = option(PolicySet.parse, PolicySet(), merge=PolicySet.updated)
    # Finished extreme-point objects keep their four points, read-only (backend.labeling_page).
    keep_extreme_points: bool = option(true_or_false, False)
    # Which control gets a label's masks when a brush and a polygon control both carry it (backend.mask_output).
    mask_type: MaskKind = option(one_of(MaskKind), MaskKind.BRUSH)
    # How far (px) a simplified polygon may stray from the mask's pixel outline; 0 keeps every corner.
    polygon_tolerance_px: float = option(number(0, 50, unit="pixels"), 1.0)
    # Imports (TASKS_CREATED) and newly published model versions queue pre-annotation (backend.preannotation).
    preannotate_on_import: bool = option(true_or_false, False)
    # Tasks without prompts get the masks of the objects the project's proposal model finds; training jobs
    # train that model too (backend.active_learning.proposal_training, backend.proposal_masks).
    proposals: bool = option(true_or_false, False)
    # The proposals' confidence threshold instead of the one chosen on the project's held-out tasks.
    proposal_threshold: float | None = option(number(0, 1), None)

    # The options the source(s) set; the others hold their defaults.
    given: frozenset[str] = frozenset()

    @classmethod
    def keys(cls) -> list[str]:
        """Every option's name, as the extra params spell it."""
        return [f.name for f in fields(cls) if "parse" in f.metadata]

    @classmethod
    def parse(cls, params, source: str) -> "ProjectOptions":
        """The options ``params`` sets: a JSON object, the JSON text of one, or None / "" for none.
        Raises OptionError naming ``source`` and the key: for a value of the wrong type or out of
        range, and for a key no option has (with the closest one when it looks like a typo)."""
        params = json_object(params, source)
        unknown = sorted(set(params) - set(cls.keys()))
        if unknown:
            raise OptionError(f"{source}: {_unknown_keys(unknown, cls.keys())}")
        values = {}
        for declared in fields(cls):
            if declared.name in params and "parse" in declared.metadata:
                try:
                    values[declared.name] = declared.metadata["parse"](params[declared.name], declared.name)
                except ValueError as exc:
                    raise OptionError(f"{source}: {exc}") from None
        return cls(**values, given=frozenset(values))

    def updated(self, later: "ProjectOptions") -> "ProjectOptions":
        """These options with ``later``'s over them: each option ``later`` sets wins (or merges)."""
        values = {}
        for declared in fields(self):
            if declared.name in later.given:
                merge = declared.metadata["merge"]
                theirs = getattr(later, declared.name)
                values[declared.name] = merge(getattr(self, declared.name), theirs) if merge else theirs
        return replace(self, **values, given=self.given | later.given)

    @classmethod
    def for_project(cls, default: "ProjectOptions | None", setup, learned: dict | None = None) -> "ProjectOptions":
        """The options serving a project: the server default (``Settings.default_options``), then the
        policies learned from its annotations (``learned``, its serving version's), then what the
        project's ``/setup`` stored (a ``ProjectSetup``, or None before any)."""
        options = default or cls()
        if learned:
            options = options.updated(cls.parse({"policies": learned}, "learned policies"))
        if setup is None:
            return options
        return options.updated(cls.parse(setup.extra_params, "extra params"))


def json_object(value, source: str) -> dict:
    """Extra params as they arrive (an object, the JSON text of one, or None / "" for none) as a dict.
    Raises OptionError naming ``source``."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise OptionError(f"{source}: not valid JSON: {exc.msg} at position {exc.pos}") from None
        except (ValueError, RecursionError):  # a number of thousands of digits, nesting thousands deep
            raise OptionError(f"{source}: not valid JSON (a number too long or nesting too deep)") from None
    if not isinstance(value, dict):
        raise OptionError(f"{source} must be a JSON object")
    return value


def _unknown_keys(unknown: list[str], known: list[str]) -> str:
    """'unknown key "a" (did you mean "b"?)' for each of ``unknown``, and the keys there are."""
    named = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), known, n=1)
        named.append(_quoted(key) + (f" (did you mean {_quoted(close[0])}?)" if close else ""))
    return f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(named)}; known: {', '.join(known)}"


def _quoted(text: str) -> str:
    """``text`` in double quotes, cut at 40 characters (it may come from anyone's request)."""
    return f'"{text}"' if len(text) <= 40 else f'"{text[:40]}…"'
