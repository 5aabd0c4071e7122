"""Care plans from ``templates/plans/<treatment>.toml`` — the I/O shell around ``service.core.plans``.

A plan file is data a clinic's clinician signs off and may edit (docs/clinical-basis.md#limits), so a
mistake in it is reported with the file and step named, at load time, instead of surfacing as a message
that never goes out. Steps are validated by ``PlanStep.from_dict``, the same builder that reads a
booking's frozen plan.

File shape::

    treatment = "microneedling"
    label_en = "microneedling"          # label_<language>, one per language
    label_es = "microagujas"
    default_duration_minutes = 60

    [[steps]]
    id = "post_immediate"
    anchor = "end"                      # "start": from starts_at; "end": from starts_at + duration
    offset_minutes = 90                 # negative: before the anchor
    channels = ["sms", "email"]
    template = "post_immediate"
    immediate = true                    # optional, with catch_up_minutes
    catch_up_minutes = 1440
    only_if_risk_flags = ["pih_risk"]   # optional: only for patients with any of these flags
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from service.core.plans import CarePlan, PlanStep
from service.settings import PROJECT_ROOT

DEFAULT_PLANS_DIR = PROJECT_ROOT / "templates" / "plans"

# Treatment keys become file names; anything else (a path, "..") is refused before touching the disk.
_TREATMENT_KEY = re.compile(r"^[a-z0-9][a-z0-9_]*$")

_PLAN_KEYS = {"treatment", "default_duration_minutes", "steps"}


class UnknownTreatment(KeyError):
    """No care plan for this treatment."""

    def __init__(self, treatment: str, known: list[str]) -> None:
        super().__init__(treatment)
        self.treatment = treatment
        self.known = known

    def __str__(self) -> str:
        # KeyError's own str() is the repr of its argument, which reads badly in an API error.
        return f"unknown treatment {self.treatment!r}; known: {', '.join(self.known) or 'none'}"


def available_treatments(plans_dir: Path | None = None) -> list[str]:
    """The treatments with a plan file, sorted (read from the folder: a test holds ``Treatment`` to it)."""
    directory = plans_dir or DEFAULT_PLANS_DIR
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.toml") if _TREATMENT_KEY.match(p.stem))


def load_plan(treatment: str, plans_dir: Path | None = None) -> CarePlan:
    """Read and validate one plan. Raises UnknownTreatment, or ValueError naming the file and step.

    Read from disk for every booking, on purpose: a clinician's edit of a plan applies to the next booking
    without a restart (each booking freezes the plan it was made with).
    """
    directory = plans_dir or DEFAULT_PLANS_DIR
    path = directory / f"{treatment}.toml"
    if not _TREATMENT_KEY.match(treatment) or not path.is_file():
        raise UnknownTreatment(treatment, available_treatments(directory))
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return _plan_from_toml(data, expected_treatment=treatment)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _plan_from_toml(data: dict[str, Any], *, expected_treatment: str) -> CarePlan:
    labels = {key.removeprefix("label_"): value for key, value in data.items() if key.startswith("label_")}
    unknown = set(data) - _PLAN_KEYS - {f"label_{lang}" for lang in labels}
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)}")
    if data.get("treatment") != expected_treatment:
        # The file name is what bookings refer to; a mismatch means a copied file was not finished.
        raise ValueError(f"treatment = {data.get('treatment')!r} does not match the file name")
    if not all(isinstance(v, str) and v for v in labels.values()):
        raise ValueError("labels must be non-empty strings")
    if "en" not in labels:
        raise ValueError("label_en is required (the fallback for every other language)")
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ValueError("a plan needs at least one [[steps]] table")
    return CarePlan(
        treatment=expected_treatment,
        default_duration_minutes=data.get("default_duration_minutes", 0),
        steps=tuple(PlanStep.from_dict(raw, index=i) for i, raw in enumerate(steps)),
        labels=labels,
    )
