"""The schema of a care-plan file — pure: validates a parsed ``templates/plans/<treatment>.toml``, reads
nothing.

A plan file is data a clinic's clinician signs off and may edit (docs/clinical-basis.md#limits), so every
mistake in it is refused when the plan loads, naming the step, instead of surfacing weeks later as a
message that never goes out. The shapes shared with a booking's frozen plan (anchors, channels, minutes,
catch-up, unknown keys, duplicate step ids) are ``PlanStep`` and ``CarePlan`` themselves; a file is held to
more than a frozen plan is:

- every risk flag a step names is a ``RiskFlag`` (the intake vocabulary a patient's flags come from): a
  misspelt flag would match no patient, and the step would silently never go;
- a template name is a plain name (it becomes a file name; ``rendering`` refuses anything else);
- the treatment matches the file name, ``label_en`` is given, and there is at least one step.

Whether each template exists for every channel and language is checked by the loader
(``service.scheduling.care_plans``), which can look at the disk.

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

from collections.abc import Mapping
from dataclasses import asdict
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass

from service.core.enums import RiskFlag
from service.core.plans import STRICT_KEYS, CarePlan, NonEmpty, PlanError, PlanStep, describe, step_label

# A template name becomes a path, so nothing that could walk out of the templates folder ("../", "/").
# ``service.rendering`` refuses the same names with this pattern.
TEMPLATE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_]*$"
TemplateName = Annotated[StrictStr, Field(pattern=TEMPLATE_NAME_PATTERN)]


@pydantic_dataclass(frozen=True, config=STRICT_KEYS)
class PlanFileStep(PlanStep):
    """A step as a plan file gives it: a ``PlanStep`` held to today's vocabulary."""

    template: TemplateName
    only_if_risk_flags: tuple[RiskFlag, ...] = ()

    def as_step(self) -> PlanStep:
        # A plain PlanStep with plain strings: it is compared with, and frozen as, a booking's snapshot.
        fields = asdict(self) | {"only_if_risk_flags": tuple(flag.value for flag in self.only_if_risk_flags)}
        return PlanStep(**fields)


_FILE_STEP = TypeAdapter(PlanFileStep)


class PlanFile(BaseModel):
    """Everything in a plan file but its steps (each step is checked on its own, so an error names it)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    treatment: NonEmpty
    default_duration_minutes: Annotated[StrictInt, Field(gt=0)]
    labels: dict[str, NonEmpty]
    steps: Annotated[list[Any], Field(min_length=1)]


def plan_from_file(data: Mapping[str, Any], *, treatment: str) -> CarePlan:
    """The plan in a parsed file named ``<treatment>.toml``. Raises PlanError naming the step at fault."""
    if "labels" in data:
        raise PlanError("unknown key 'labels'; a plan names its treatment with label_<language> keys")
    labels = {key.removeprefix("label_"): value for key, value in data.items() if key.startswith("label_")}
    rest = {key: value for key, value in data.items() if not key.startswith("label_")}
    try:
        header = PlanFile.model_validate(rest | {"labels": labels})
    except ValidationError as exc:
        # Named as the file names them: the model's labels.es is the file's label_es.
        raise PlanError(describe(exc).replace("labels.", "label_")) from exc
    if header.treatment != treatment:
        # The file name is what bookings refer to; a mismatch means a copied file was not finished.
        raise PlanError(f"treatment = {header.treatment!r} does not match the file name")
    if "en" not in header.labels:
        raise PlanError("label_en is required (the fallback for every other language)")
    steps: list[PlanStep] = []
    for index, raw in enumerate(header.steps):
        if not isinstance(raw, Mapping):
            raise PlanError("not a [[steps]] table", step=f"#{index + 1}")
        try:
            steps.append(_FILE_STEP.validate_python(dict(raw)).as_step())
        except ValidationError as exc:
            raise PlanError(describe(exc), step=step_label(raw, index)) from exc
    try:
        return CarePlan(
            treatment=header.treatment,
            default_duration_minutes=header.default_duration_minutes,
            steps=tuple(steps),
            labels=header.labels,
        )
    except ValidationError as exc:
        raise PlanError(describe(exc)) from exc
