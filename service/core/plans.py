"""Care plans and their expansion into timed messages — pure: no I/O, no clock, no database.

A care plan (docs/clinical-basis.md#aftercare and #schedule) is a list of steps, each a time relative to
the treatment plus the channels and template it goes out on. Expanding a plan for one booking gives one
``PlannedMessage`` per (step × channel); the persistence layer turns those into outbox rows.

Times: pre-care steps count from the start of the treatment (``anchor = "start"``), aftercare steps from
its end (``anchor = "end"``: start + duration), so a long PRP session does not send "how is your skin
tonight" while the patient is still in the chair (docs/architecture.md#decisions, "Offsets").
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from service.core.quiet_hours import QuietHours

Anchor = Literal["start", "end"]

ANCHORS: frozenset[str] = frozenset({"start", "end"})
CHANNELS: frozenset[str] = frozenset({"sms", "email"})

# Bumped when the snapshot's shape changes, so a booking frozen under an old shape can still be read.
SNAPSHOT_VERSION = 1


@dataclass(frozen=True)
class PlanStep:
    """One message of a care plan.

    immediate / catch_up_minutes: for the post-treatment instructions only. A booking entered late (the
        front desk types it in after the patient has left) still gets them right away, as long as ``now``
        is before the step's time + catch_up_minutes. Every other step whose time has passed is skipped:
        "start your SPF tomorrow" sent three days late would confuse more than help.
    only_if_risk_flags: the step applies when the patient has *any* of these intake flags (e.g. an extra
        sun-protection message for patients at higher risk of hyperpigmentation). Empty: always applies.
    """

    id: str
    anchor: Anchor
    offset_minutes: int
    channels: tuple[str, ...]
    template: str
    immediate: bool = False
    catch_up_minutes: int = 0
    only_if_risk_flags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Lists from TOML or JSON become tuples, so steps stay hashable and immutable.
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "only_if_risk_flags", tuple(self.only_if_risk_flags))
        where = f"step {self.id!r}"
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"{where}: a step id must be a non-empty string")
        if not isinstance(self.template, str) or not self.template:
            raise ValueError(f"{where}: a step needs a template name")
        if self.anchor not in ANCHORS:
            raise ValueError(f"{where}: anchor must be 'start' or 'end', not {self.anchor!r}")
        # bool is an int in Python; `offset_minutes = true` in a plan file is a typo, not one minute.
        if not isinstance(self.offset_minutes, int) or isinstance(self.offset_minutes, bool):
            raise ValueError(f"{where}: offset_minutes must be a whole number of minutes")
        if not isinstance(self.catch_up_minutes, int) or isinstance(self.catch_up_minutes, bool):
            raise ValueError(f"{where}: catch_up_minutes must be a whole number of minutes")
        if self.catch_up_minutes < 0:
            raise ValueError(f"{where}: catch_up_minutes cannot be negative")
        if self.catch_up_minutes and not self.immediate:
            # Without `immediate` the catch-up would be ignored; say so instead of silently skipping.
            raise ValueError(f"{where}: catch_up_minutes only applies to an immediate step")
        if not self.channels:
            raise ValueError(f"{where}: a step needs at least one channel")
        unknown = [c for c in self.channels if c not in CHANNELS]
        if unknown:
            raise ValueError(f"{where}: unknown channel(s) {unknown}; known: {sorted(CHANNELS)}")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError(f"{where}: a channel is listed twice")

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
        """A step from a plan file's ``[[steps]]`` table or a booking's frozen snapshot — one builder for
        both, so a step can never be read one way from a file and another way from a booking.

        Unknown keys are refused: ``only_if_risk_flag = [...]`` (a typo) would otherwise silently send a
        risk-specific message to every patient.
        """
        name = (
            f"step {raw.get('id', f'#{index + 1}')!r}" if isinstance(raw, Mapping) else f"step #{index + 1}"
        )
        if not isinstance(raw, Mapping):
            raise ValueError(f"{name}: not a table")
        missing = _STEP_REQUIRED - set(raw)
        if missing:
            raise ValueError(f"{name}: missing {sorted(missing)}")
        unknown = set(raw) - _STEP_REQUIRED - _STEP_OPTIONAL
        if unknown:
            raise ValueError(f"{name}: unknown key(s) {sorted(unknown)}")
        for key in ("channels", "only_if_risk_flags"):
            value = raw.get(key, [])
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{name}: {key} must be a list of strings")
        if not isinstance(raw.get("immediate", False), bool):
            raise ValueError(f"{name}: immediate must be true or false")
        # __post_init__ checks the rest (anchor, channels, offsets) and names the step in its message.
        return cls(
            id=raw["id"],
            anchor=raw["anchor"],
            offset_minutes=raw["offset_minutes"],
            channels=tuple(raw["channels"]),
            template=raw["template"],
            immediate=raw.get("immediate", False),
            catch_up_minutes=raw.get("catch_up_minutes", 0),
            only_if_risk_flags=tuple(raw.get("only_if_risk_flags", ())),
        )


_STEP_REQUIRED = frozenset({"id", "anchor", "offset_minutes", "channels", "template"})
_STEP_OPTIONAL = frozenset({"immediate", "catch_up_minutes", "only_if_risk_flags"})


@dataclass(frozen=True)
class CarePlan:
    """A treatment's care plan. ``labels`` maps a language code to the treatment's name in it."""

    treatment: str
    default_duration_minutes: int
    steps: tuple[PlanStep, ...]
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        # A private copy: the dataclass is frozen, and a caller mutating its dict must not change the plan.
        object.__setattr__(self, "labels", dict(self.labels))
        if not self.treatment:
            raise ValueError("a care plan needs a treatment")
        if (
            not isinstance(self.default_duration_minutes, int)
            or isinstance(self.default_duration_minutes, bool)
            or self.default_duration_minutes <= 0
        ):
            raise ValueError(
                f"default_duration_minutes must be positive, got {self.default_duration_minutes!r}"
            )
        seen: set[str] = set()
        for step in self.steps:
            # The outbox is unique per (booking, step, channel): two steps with one id would collide there.
            if step.id in seen:
                raise ValueError(f"step {step.id!r}: duplicate step id")
            seen.add(step.id)

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
            raise ValueError(f"care plan snapshot version {version!r} is not supported")
        return cls(
            treatment=d["treatment"],
            default_duration_minutes=d["default_duration_minutes"],
            steps=tuple(PlanStep.from_dict(s, index=i) for i, s in enumerate(d["steps"])),
            labels=dict(d.get("labels", {})),
        )


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
