"""Task failures logged without the data they failed on.

Celery logs a failing task's exception with its message and traceback, and a database error's message can
quote the row it refused (PostgreSQL's DETAIL names the key and its value: a phone number). Every task
re-raises its failure as ``TaskFailed``, naming the task, its ids and the exception's type only; retryable
failures a task names are let through as they are, so Celery can retry them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class TaskFailed(Exception):
    """A task failed; the message holds the task, its arguments (ids) and the exception's type."""


def without_details(*retryable: type[BaseException]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    def decorate(task: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(task)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return task(*args, **kwargs)
            except retryable:
                raise
            except Exception as exc:
                # "from None": the original message (and the values it may quote) stays out of the log.
                raise TaskFailed(f"{task.__name__}{args!r} failed: {type(exc).__name__}") from None

        return run

    return decorate
