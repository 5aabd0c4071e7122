"""Care plans and their expansion into timed messages — pure: no I/O, no clock, no database.

A care plan (docs/clinical-basis.md#aftercare and #schedule) is a list of steps, each a time relative to
the treatment plus the channels and template it goes out on. Expanding a plan for one booking gives one
``PlannedMessage`` per (step × channel); the persistence layer turns those into outbox rows.

Times: pre-care steps count from the start of the treatment (``anchor = "start"``), aftercare steps from
its end (``anchor = "end"``: start + duration), so a long PRP session does not send "how is your skin
tonight" while the patient is still in the chair (docs/architecture.md#decisions, "Offsets").
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass

from service.core.quiet_hours import QuietHours

Anchor = Literal["start", "end"]
ChannelName = Literal["sms", "email"]

# Bumped when the snapshot's shape changes, so a booking frozen under an old shape can still be read.
SNAPSHOT_VERSION = 1

# Unknown keys are refused: `only_if_risk_flag = [...]` (a typo) would otherwise silently send a
# risk-specific message to every patient. Numbers and booleans are strict: bool is an int in Python, and
# `offset_minutes = true` in a plan file is a typo, not one minute.
STRICT_KEYS = ConfigDict(extra="forbid")
NonEmpty = Annotated[StrictStr, Field(min_length=1)]


class PlanError(ValueError):
    """A care plan that cannot be used, naming the file (when read from one) and the step (when one is at
    fault): ``care plan templates/plans/microneedling.toml, step "day3_warning": no template ...``."""

    def __init__(self, message: str, *, step: str | None = None, file: str | None = None) -> None:
        self.message = message
        self.step = step
        self.file = file
        where = [f"care plan {file}"] if file else []
        if step is not None:
            # Quoted as JSON: an id holding a newline or a quote still gives one unambiguous line.
            where.append(
                f"step {step}" if step.startswith("#") else f"step {json.dumps(step, ensure_ascii=False)}"
            )
        super().__init__(f"{', '.join(where)}: {message}" if where else message)

    def in_file(self, file: str) -> PlanError:
        return PlanError(self.message, step=self.step, file=file)


def describe(error: ValidationError, *, limit: int = 3) -> str:
    """A pydantic error on one line, each problem as ``key: what is wrong (got ...)``: the whole line goes
    into a start-up refusal, which a person reads in a deploy log."""
    parts = []
    for item in error.errors()[:limit]:
        where = ".".join(str(part) for part in item["loc"])
        if item["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            parts.append(f"unknown key {where!r}")
        elif item["type"] == "missing":
            parts.append(f"{where}: missing")
        else:
            message = item["msg"].removeprefix("Value error, ")
            got = item.get("input")
            shown = f" (got {got!r})" if where and not isinstance(got, Mapping | list | tuple) else ""
            parts.append(f"{where}: {message}{shown}" if where else message)
    more = len(error.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def step_label(raw: Any, index: int) -> str:
    """How an error names a step: its id, or its position when it has none."""
    ident = raw.get("id") if isinstance(raw, Mapping) else None
    return ident if isinstance(ident, str) and ident else f"#{index + 1}"


@pydantic_dataclass(frozen=True, config=STRICT_KEYS)
class PlanStep:
    """One message of a care plan, as a plan file gives it and as a booking's frozen plan keeps it.

    immediate / catch_up_minutes: for the post-treatment instructions only. A booking entered late (the
        front desk types it in after the patient has left) still gets them right away, as long as ``now``
        is before the step's time + catch_up_minutes. Every other step whose time has passed is skipped:
        "start your SPF tomorrow" sent three days late would confuse more than help.
    only_if_risk_flags: the step applies when the patient has *any* of these intake flags (e.g. an extra
        sun-protection message for patients at higher risk of hyperpigmentation). Empty: always applies.
        Plain strings here: a plan *file* is held to today's vocabulary (``plan_files``), a booking's frozen
        step is not, so a booking made under an older vocabulary still loads.
    """

    id: NonEmpty
    anchor: Anchor
    offset_minutes: StrictInt
    channels: Annotated[tuple[ChannelName, ...], Field(min_length=1)]
    template: NonEmpty
    immediate: StrictBool = False
    catch_up_minutes: Annotated[StrictInt, Field(ge=0)] = 0
    only_if_risk_flags: tuple[StrictStr, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> PlanStep:
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("a channel is listed twice")
        if self.catch_up_minutes and not self.immediate:
            # Without `immediate` the catch-up would be ignored; say so instead of silently skipping.
            raise ValueError("catch_up_minutes only applies to an immediate step")
        return self

    def applies_to(self, risk_flags: Collection[str]) -> bool:
        return not self.only_if_risk_flags or any(flag in risk_flags for flag in self.only_if_risk_flags)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "anchor": self.anchor,
            "offset_minutes": self.offset_minutes,
            "channels": list(self.channels),
            "template": self.template,
            "immediate": self.immediate,
            "catch_up_minutes": self.catch_up_minutes,
            "only_if_risk_flags": list(self.only_if_risk_flags),
        }

    @classmethod
    def from_dict(cls, raw: Any, *, index: int = 0) -> PlanStep:
        """A step from a booking's frozen snapshot (``to_dict``). Raises PlanError naming the step."""
        if not isinstance(raw, Mapping):
            raise PlanError("not a table", step=f"#{index + 1}")
        try:
            return _STEP.validate_python(dict(raw))
        except ValidationError as exc:
            raise PlanError(describe(exc), step=step_label(raw, index)) from exc


_STEP = TypeAdapter(PlanStep)


@pydantic_dataclass(frozen=True, config=STRICT_KEYS)
class CarePlan:
    """A treatment's care plan. ``labels`` maps a language code to the treatment's name in it."""

    treatment: NonEmpty
    default_duration_minutes: Annotated[StrictInt, Field(gt=0)]
    steps: tuple[PlanStep, ...]
    labels: dict[str, NonEmpty] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique_steps(self) -> CarePlan:
        seen: set[str] = set()
        for step in self.steps:
            # The outbox is unique per (booking, step, channel): two steps with one id would collide there.
            if step.id in seen:
                raise ValueError(f'step "{step.id}": duplicate step id')
            seen.add(step.id)
        return self

    def label(self, language: str) -> str:
        """The treatment's name in ``language``, else English, else its key."""
        return self.labels.get(language) or self.labels.get("en") or self.treatment.replace("_", " ")

    def to_snapshot(self) -> dict[str, Any]:
        """A JSON-safe copy, frozen into the booking so later edits to the plan do not move its messages."""
        return {
            "version": SNAPSHOT_VERSION,
            "treatment": self.treatment,
            "default_duration_minutes": self.default_duration_minutes,
            "labels": dict(self.labels),
            "steps": [step.to_dict() for step in self.steps],
        }

    @staticmethod
    def label_in_snapshot(d: Mapping[str, Any], language: str) -> str:
        """``label`` read straight from a booking's snapshot, without rebuilding the plan (every send
        names the treatment)."""
        labels = d.get("labels") or {}
        return labels.get(language) or labels.get("en") or str(d["treatment"]).replace("_", " ")

    @classmethod
    def from_snapshot(cls, d: Mapping[str, Any]) -> CarePlan:
        version = d.get("version", SNAPSHOT_VERSION)
        if version != SNAPSHOT_VERSION:
            raise PlanError(f"care plan snapshot version {version!r} is not supported")
        steps = tuple(PlanStep.from_dict(s, index=i) for i, s in enumerate(d["steps"]))
        try:
            return cls(
                treatment=d["treatment"],
                default_duration_minutes=d["default_duration_minutes"],
                steps=steps,
                labels=dict(d.get("labels", {})),
            )
        except ValidationError as exc:
            raise PlanError(describe(exc)) from exc


@dataclass(frozen=True)
class PlannedMessage:
    """One message a booking should get. ``step`` is the step id; ``send_at`` is aware UTC.

    skipped: the step's time had already passed when the booking was expanded; the row is recorded as
        skipped (so staff can see it was never sent, and why) and ``send_at`` keeps the computed time.
    """

    step: str
    channel: str
    template: str
    send_at: datetime
    skipped: bool


def _require_aware(name: str, value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        # A naive time would be read as server-local somewhere and as UTC elsewhere: a message an hour
        # or a day off. Refuse it here rather than guess.
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


def step_time(step: PlanStep, *, starts_at: datetime, duration_minutes: int) -> datetime:
    """When a step is due: its anchor (treatment start or end) plus its offset, in UTC."""
    start = _require_aware("starts_at", starts_at)
    anchor = start if step.anchor == "start" else start + timedelta(minutes=duration_minutes)
    return anchor + timedelta(minutes=step.offset_minutes)


def expand_plan(
    plan: CarePlan,
    *,
    starts_at: datetime,
    duration_minutes: int,
    channels: Sequence[str],
    risk_flags: Collection[str],
    now: datetime,
    quiet_hours: QuietHours | None = None,
    timezone: str = "UTC",
) -> list[PlannedMessage]:
    """Every message a booking should get, with its send time, sorted by (send_at, step, channel).

    One message per step that applies to the patient's risk flags × channel that is both the step's and
    the patient's. A step whose time is at or before ``now`` is skipped, except an immediate step still
    within its catch-up window, which is due now.

    ``quiet_hours`` (in the patient's ``timezone``) move each SMS to the first allowed time, so the
    booking shows when a message will really go: a 19:30 treatment's "how is your skin tonight" SMS is
    listed at 08:00 the next morning, not at 22:00. The send task checks the window again at send time
    (the patient may have moved timezone since).
    """
    start = _require_aware("starts_at", starts_at)
    now_utc = _require_aware("now", now)
    if isinstance(duration_minutes, bool) or not isinstance(duration_minutes, int) or duration_minutes < 0:
        raise ValueError(f"duration_minutes must be a whole number of minutes >= 0, got {duration_minutes!r}")
    wanted = set(channels)

    planned: list[PlannedMessage] = []
    for step in plan.steps:
        if not step.applies_to(risk_flags):
            continue
        due = step_time(step, starts_at=start, duration_minutes=duration_minutes)
        send_at, skipped = due, due <= now_utc
        if skipped and step.immediate and now_utc < due + timedelta(minutes=step.catch_up_minutes):
            # The patient has left without written instructions; late is far better than never.
            send_at, skipped = now_utc, False
        for channel in step.channels:
            if channel not in wanted:
                continue
            at = send_at
            if channel == "sms" and quiet_hours is not None and not skipped:
                at = quiet_hours.next_allowed(send_at, timezone)
            planned.append(PlannedMessage(step.id, channel, step.template, at, skipped))
    planned.sort(key=lambda m: (m.send_at, m.step, m.channel))
    return planned
