"""Task failures logged without the data they failed on.

Celery logs a failing task's exception with its message and traceback, and a database error's message can
quote the row it refused (PostgreSQL's DETAIL names the key and its value: a phone number). Every task
re-raises its failure as ``TaskFailed``, naming the task, its ids and the exception's type only; retryable
failures a task names are let through as they are, so Celery can retry them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class TaskFailed(Exception):
    """A task failed; the message holds the task, its arguments (ids) and the exception's type."""


def without_details(*retryable: type[BaseException]) -> Callable[[F], F]:
    def decorate(task: F) -> F:
        @functools.wraps(task)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return task(*args, **kwargs)
            except retryable:
                raise
            except Exception as exc:
                # "from None": the original message (and the values it may quote) stays out of the log.
                raise TaskFailed(f"{task.__name__}{args!r} failed: {type(exc).__name__}") from None

        return run  # type: ignore[return-value]

    return decorate
