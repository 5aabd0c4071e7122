"""Care plans from ``PLANS_DIR`` (``templates/plans/<treatment>.toml``) — the I/O shell around
``service.core.plan_files``, which holds the file's schema.

A plan is checked whole when it loads: its shape (``plan_files``), and every template each step names, for
each of its channels, in every language a patient may have (``rendering.template_problem``: the file
exists and compiles, and so does every layout and partial it uses). The web process, the worker and
``aftercare migrate`` call ``check_plans`` as they start and refuse to start on a broken plan, with one line
naming the file, the step and what is wrong: a template missing after a plan edit would otherwise only show
when its first message failed to render.

Plans are read once per process (``load_plans`` is cached): bookings are expanded from the plan the
process checked, never from a file edited since, so an edit needs a restart (until clinics edit plans in
the dashboard). Each booking still freezes the plan it was made with (``CarePlan.to_snapshot``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from types import MappingProxyType

from service.core.enums import Treatment
from service.core.plan_files import plan_from_file
from service.core.plans import CarePlan, PlanError
from service.rendering import MESSAGES_DIR, languages_to_check, template_problem
from service.settings import PROJECT_ROOT, get_settings

# Treatment keys become file names and API values; a file named otherwise would never be loaded.
_TREATMENT_KEY = re.compile(r"^[a-z0-9][a-z0-9_]*$")


class UnknownTreatment(KeyError):
    """No care plan for this treatment."""

    def __init__(self, treatment: str, known: list[str]) -> None:
        super().__init__(treatment)
        self.treatment = treatment
        self.known = known

    def __str__(self) -> str:
        # KeyError's own str() is the repr of its argument, which reads badly in an API error.
        return f"unknown treatment {self.treatment!r}; known: {', '.join(self.known) or 'none'}"


def _plans_dir(plans_dir: Path | None) -> Path:
    return plans_dir or get_settings().PLANS_DIR


def _shown(path: Path) -> str:
    """A path as a message shows it: from the project root when it is inside it."""
    try:
        return str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def available_treatments(plans_dir: Path | None = None) -> list[str]:
    """The treatments with a plan file, sorted (read from the folder: a test holds ``Treatment`` to it)."""
    directory = _plans_dir(plans_dir)
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.toml") if _TREATMENT_KEY.match(p.stem))


def load_plans(plans_dir: Path | None = None, messages_dir: Path = MESSAGES_DIR) -> Mapping[str, CarePlan]:
    """Every plan in the folder by treatment, each checked with its templates. Raises PlanError naming the
    file and the step. Read once per process: see the module's docstring."""
    return _load_plans(_plans_dir(plans_dir), messages_dir)


@cache
def _load_plans(directory: Path, messages_dir: Path) -> Mapping[str, CarePlan]:
    if not directory.is_dir():
        raise PlanError(f"PLANS_DIR {_shown(directory)} is not a folder")
    misnamed = [p for p in sorted(directory.glob("*.toml")) if not _TREATMENT_KEY.match(p.stem)]
    if misnamed:
        # Said rather than skipped: the clinic would believe the plan is in use.
        raise PlanError(
            "the file name must be a treatment key (lower-case letters, digits, _)", file=_shown(misnamed[0])
        )
    problems: dict[tuple[str, str, str], str | None] = {}  # the plans share their templates: check each once
    plans: dict[str, CarePlan] = {}
    for treatment in available_treatments(directory):
        path = directory / f"{treatment}.toml"
        try:
            with path.open("rb") as f:
                data = tomllib.load(f)
            plan = plan_from_file(data, treatment=treatment)
        except tomllib.TOMLDecodeError as exc:
            raise PlanError(f"not valid TOML: {exc}", file=_shown(path)) from exc
        except PlanError as exc:
            raise exc.in_file(_shown(path)) from exc
        for step in plan.steps:
            for channel in step.channels:
                for language in languages_to_check(messages_dir):
                    key = (step.template, channel, language)
                    if key not in problems:
                        problems[key] = template_problem(step.template, channel, language, messages_dir)
                    problem = problems[key]
                    if problem:
                        raise PlanError(problem, step=step.id, file=_shown(path))
        plans[treatment] = plan
    # Read-only: every caller in the process shares these plans.
    return MappingProxyType(plans)


def check_plans(plans_dir: Path | None = None, messages_dir: Path = MESSAGES_DIR) -> Mapping[str, CarePlan]:
    """What a process runs as it starts: every plan loads with every template it names, and every treatment
    the API accepts has one (else its bookings would fail one by one). Raises PlanError."""
    directory = _plans_dir(plans_dir)
    plans = load_plans(directory, messages_dir)
    for treatment in Treatment:
        if treatment.value not in plans:
            raise PlanError(
                f"missing: bookings for {treatment.value} would be refused",
                file=_shown(directory / f"{treatment.value}.toml"),
            )
    return plans


def load_plan(treatment: str, plans_dir: Path | None = None) -> CarePlan:
    """One treatment's checked plan. Raises UnknownTreatment, or PlanError naming the file and step."""
    plans = load_plans(plans_dir)
    if treatment not in plans:
        raise UnknownTreatment(treatment, sorted(plans))
    return plans[treatment]
