"""The development channel: messages appear in the log and on stdout instead of reaching anyone.

This is the ONLY place message bodies may be logged (docs/architecture.md#invariants): with no provider
configured nobody but the developer sees them, and seeing exactly what a patient would get is the point.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import TextIO

from service.channels.base import OutgoingMessage, ProviderReceipt

logger = logging.getLogger("aftercare.console")


def render_block(message: OutgoingMessage) -> str:
    """A readable block with everything the provider would have received."""
    lines = [
        f"----- {message.channel.upper()} outbox #{message.outbox_id} -----",
        f"From: {message.sender}",
        f"To:   {message.to}",
    ]
    if message.subject is not None:
        lines.append(f"Subject: {message.subject}")
    if message.status_callback:
        lines.append(f"Status callback: {message.status_callback}")
    lines.extend(f"{name}: {value}" for name, value in message.headers.items())
    lines.extend(["", message.body])
    if message.html:
        # The text part says the same; the HTML would bury it in markup in a terminal.
        lines.extend(["", f"(+ an HTML part of {len(message.html)} characters)"])
    lines.append("-" * 40)
    return "\n".join(lines)


class ConsoleChannel:
    """Stands in for a provider: "delivers" at once and never fails."""

    def __init__(self, name: str, *, stream: TextIO | None = None) -> None:
        if name not in ("sms", "email"):
            raise ValueError(f"unknown channel {name!r}")
        self.name = name
        # Logged always (the worker's log is the developer's console); also printed to ``stream`` when one
        # is given. Not printed to stdout by default: Celery re-logs stdout, which showed every message twice.
        self._stream = stream

    def send(self, message: OutgoingMessage) -> ProviderReceipt:
        block = render_block(message)
        logger.info("%s", block)
        if self._stream is not None:
            print(block, file=self._stream, flush=True)
        provider_id = f"console-{self.name}-{message.outbox_id}-{uuid.uuid4().hex[:8]}"
        return ProviderReceipt(provider_id=provider_id, status="delivered")

    def lookup(self, message: OutgoingMessage, *, since: datetime) -> ProviderReceipt | None:
        # The console keeps no record; a console "send" never has an unknown outcome anyway.
        return None
