"""The one list of reasons an outbox row can exist: the entry points (the workers, the web app) build the
map from a row's kind to its purpose here and pass it to the send path, as they pass channels.

A new kind of outbound row is one purpose in the package that owns its reason, its templates, and a line
here (docs/architecture.md#purposes).
"""

from __future__ import annotations

from functools import cache

from service.core.enums import MessageKind
from service.outbox.purpose import Purpose, Purposes
from service.paging.purpose import Page
from service.replies.purpose import Answer, StaffAnswer
from service.scheduling.purpose import CareMessage


@cache
def purposes() -> Purposes:
    every: tuple[Purpose, ...] = (CareMessage(), Answer(), StaffAnswer(), Page())
    mapping = {purpose.kind: purpose for purpose in every}
    missing = set(MessageKind) - set(mapping)
    assert not missing, f"no purpose for {sorted(missing)}"
    return mapping
