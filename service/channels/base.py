"""One interface for every way we reach a person. Nothing above this layer knows the provider."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class OutgoingMessage:
    """A rendered message ready for a provider.

    ``outbox_id`` is our ScheduledMessage id: the SMS status callback URL carries it and the email
    Message-ID is derived from it, so a resent email is recognisably the same message.
    """

    outbox_id: int
    channel: str  # "sms" | "email"
    to: str  # E.164 for SMS, an address for email
    sender: str  # E.164 for SMS, an address for email
    body: str  # SMS text, or the email's plain-text part
    subject: str | None = None
    html: str | None = None
    status_callback: str | None = None  # SMS only
    headers: dict[str, str] = field(default_factory=dict)  # email only (List-Unsubscribe, ...)


@dataclass(frozen=True)
class ProviderReceipt:
    provider_id: str
    status: str  # the provider's word: "queued", "sent", "accepted", ...


class DeliveryError(Exception):
    """A send that did not succeed.

    permanent: retrying can never succeed (invalid number, landline, unsubscribed at the carrier); the
        row fails and falls back to the other channel.
    outcome_unknown: the request may have reached the provider (a timeout after it left, a 5xx); the row
        must be settled by a status callback or a look-up, never by sending again blind.
    Otherwise the request certainly did not take effect and may be retried with backoff.
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        outcome_unknown: bool = False,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.outcome_unknown = outcome_unknown
        self.code = code


class Channel(Protocol):
    name: str

    def send(self, message: OutgoingMessage) -> ProviderReceipt:
        """Hand the message to the provider; raise DeliveryError when it did not (certainly) go."""
        ...

    def lookup(self, message: OutgoingMessage, *, since: datetime) -> ProviderReceipt | None:
        """Find a message we may already have sent, to settle an unknown outcome.

        Returns the provider's record, or None when the provider certainly has none. Raises
        DeliveryError(outcome_unknown=True) when it cannot tell now (provider down); a channel that can never
        tell (SMTP) returns None, accepting that an email may rarely go twice (with the same Message-ID).
        """
        ...
