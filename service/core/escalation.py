"""Escalation policy — pure: who is paged next, and when.

A clinic's policy is its staff in levels (level 1 is paged first) and an acknowledgement timeout per
severity. An escalation freezes the policy it started with (``Policy.to_snapshot``), so a later edit of the
staff list or the timeouts never changes one already running (the pattern Grafana OnCall uses).

The rounds of an escalation (docs/architecture.md#paging):

- it opens by paging level 1 at once;
- not acknowledged within the timeout: the next level; after the last level, the last level again, until
  someone acknowledges;
- an emergency pages every level at once after the first timeout (and again at each timeout);
- a rise in severity re-pages the levels last paged at once and restarts the timer;
- a page that fails for good (a wrong number, a phone that replied STOP) moves on to the next level at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from service.core.enums import Severity

PAGE_FAILED_REASON = "a page to the level before could not be delivered"
# ACK codes (docs/architecture.md#paging): random per escalation, four characters a clinician types on a
# phone, from an alphabet without look-alikes (no 0/O, 1/I/L, 2/Z, 5/S, 8/B, U/V). 21**4 = 194,481 codes:
# with five wrong tries per phone per quarter hour and a handful open at a time, a guess is a lottery
# ticket — and only a staff member paged for the escalation (or above its highest level) may ACK it.
ACK_ALPHABET = "ACDEFHJKMNPRTWXY34679"
ACK_LENGTH = 4


def new_ack_code(draw: Callable[[str], str]) -> str:
    """A code of ``ACK_LENGTH`` characters, each drawn by ``draw`` (``secrets.choice`` in the service)."""
    return "".join(draw(ACK_ALPHABET) for _ in range(ACK_LENGTH))


def read_ack_code(text: str) -> str | None:
    """The code in a staff member's "ACK 4K7P" ("ack #4k7p", "Ack4K7P", "ACK 4K7P."), or None when the
    text is no ACK. Linear: characters are looked at once, and the text is cut before anything else."""
    words = "".join(c for c in text[:64].upper() if c.isalnum())
    if not words.startswith("ACK") or len(text.strip()) > 40:
        return None
    return words[3:] or ""


DEFAULT_ACK_TIMEOUTS: Mapping[str, int] = {Severity.EMERGENCY.value: 300, Severity.URGENT.value: 900}


@dataclass(frozen=True)
class Policy:
    """Levels of staff ids, level 1 first (empty levels left out), and timeouts in seconds by severity."""

    levels: tuple[tuple[int, tuple[int, ...]], ...]
    ack_timeouts: Mapping[str, int]

    @classmethod
    def build(cls, staff: Iterable[tuple[int, int]], ack_timeouts: Mapping[str, int]) -> Policy:
        """From (staff id, level) pairs of the clinic's active staff."""
        by_level: dict[int, list[int]] = {}
        for staff_id, level in staff:
            by_level.setdefault(level, []).append(staff_id)
        levels = tuple((level, tuple(sorted(ids))) for level, ids in sorted(by_level.items()))
        return cls(levels=levels, ack_timeouts={**DEFAULT_ACK_TIMEOUTS, **ack_timeouts})

    @property
    def empty(self) -> bool:
        return not self.levels

    def timeout(self, severity: str) -> timedelta:
        seconds = self.ack_timeouts.get(str(severity), DEFAULT_ACK_TIMEOUTS[Severity.URGENT.value])
        return timedelta(seconds=seconds)

    def staff_at(self, levels: Iterable[int]) -> list[int]:
        wanted = set(levels)
        return [staff_id for level, ids in self.levels if level in wanted for staff_id in ids]

    def to_snapshot(self) -> dict[str, Any]:
        return {
            "levels": [{"level": level, "staff": list(ids)} for level, ids in self.levels],
            "ack_timeouts": dict(self.ack_timeouts),
        }

    @classmethod
    def from_snapshot(cls, data: Mapping[str, Any]) -> Policy:
        levels = tuple(
            (int(item["level"]), tuple(int(i) for i in item["staff"])) for item in data.get("levels", [])
        )
        return cls(levels=levels, ack_timeouts=dict(data.get("ack_timeouts", DEFAULT_ACK_TIMEOUTS)))


@dataclass(frozen=True)
class Round:
    """One round of pages: the policy levels to page, when, and why."""

    levels: tuple[int, ...]
    due_at: datetime
    reason: str


def first_round(policy: Policy, *, now: datetime) -> Round | None:
    """Level 1 at once; None when the clinic has nobody to page."""
    if policy.empty:
        return None
    return Round((policy.levels[0][0],), now, "it was just reported")


def _after(policy: Policy, severity: str, paged: tuple[int, ...]) -> tuple[int, ...]:
    all_levels = tuple(level for level, _ in policy.levels)
    if severity == Severity.EMERGENCY:
        return all_levels
    later = [level for level in all_levels if level > max(paged, default=0)]
    return (later[0],) if later else (all_levels[-1],)


def next_round(policy: Policy, severity: str, *, paged: tuple[int, ...], now: datetime) -> Round | None:
    """The round that follows one that paged ``paged`` at ``now``, if nobody acknowledges in time."""
    if policy.empty:
        return None
    return Round(
        _after(policy, severity, paged), now + policy.timeout(severity), "nobody acknowledged it in time"
    )


def round_after_failed_page(
    policy: Policy, severity: str, *, paged: tuple[int, ...], now: datetime
) -> Round | None:
    """A page of the last round failed for good: the next level, at once."""
    if policy.empty:
        return None
    return Round(_after(policy, severity, paged), now, PAGE_FAILED_REASON)


def round_after_severity_rise(policy: Policy, *, paged: tuple[int, ...], now: datetime) -> Round | None:
    """The severity rose: the levels last paged again, at once (and the timer starts again from there)."""
    if policy.empty:
        return None
    return Round(paged or (policy.levels[0][0],), now, "its severity rose")
