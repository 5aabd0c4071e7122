"""The development channel: messages appear in the log and on stdout instead of reaching anyone.

This is the ONLY place message bodies may be logged (DESIGN §9): with no provider configured nobody but the
developer sees them, and seeing exactly what a patient would get is the point.
"""

from __future__ import annotations

import logging
import sys
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
        lines.extend(["", "--- html ---", message.html])
    lines.append("-" * 40)
    return "\n".join(lines)


class ConsoleChannel:
    """Stands in for a provider: "delivers" at once and never fails."""

    def __init__(self, name: str, *, stream: TextIO | None = None) -> None:
        if name not in ("sms", "email"):
            raise ValueError(f"unknown channel {name!r}")
        self.name = name
        # None means "sys.stdout at the time of sending", so a redirected or captured stdout is honoured.
        self._stream = stream

    def send(self, message: OutgoingMessage) -> ProviderReceipt:
        block = render_block(message)
        logger.info("%s", block)
        stream = self._stream or sys.stdout
        print(block, file=stream, flush=True)
        provider_id = f"console-{self.name}-{message.outbox_id}-{uuid.uuid4().hex[:8]}"
        return ProviderReceipt(provider_id=provider_id, status="delivered")

    def lookup(self, message: OutgoingMessage, *, since: datetime) -> ProviderReceipt | None:
        # The console keeps no record; a console "send" never has an unknown outcome anyway.
        return None
