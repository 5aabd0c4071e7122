"""One interface for every way we reach a person, in both directions. Nothing above this layer knows the
provider: sending takes an ``OutgoingMessage`` and gives a ``ProviderReceipt`` or a ``DeliveryError``;
what providers post to us (a patient's text or email, a delivery status) arrives as an ``InboundMessage``
or a ``DeliveryUpdate``, plain values in our own words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from service.core.enums import Channel as ChannelName
from service.core.enums import MessageStatus, RecipientProblem


@dataclass(frozen=True)
class OutgoingMessage:
    """A rendered message ready for a provider.

    ``outbox_id`` is our ScheduledMessage id: the SMS status callback URL carries it and the email
    Message-ID is derived from it, so a resent email is recognisably the same message.
    """

    outbox_id: int
    channel: ChannelName
    to: str  # E.164 for SMS, an address for email
    sender: str  # E.164 for SMS, an address for email
    body: str  # SMS text, or the email's plain-text part
    subject: str | None = None
    html: str | None = None
    status_callback: str | None = None  # SMS only
    headers: dict[str, str] = field(default_factory=dict)  # email only (List-Unsubscribe, ...)
    # What identifies a message that is not an outbox row (an alarm): the email's Message-ID is made from it.
    reference: str | None = None


@dataclass(frozen=True)
class ProviderReceipt:
    provider_id: str
    status: str  # the provider's word: "queued", "sent", "accepted", ...


class DeliveryError(Exception):
    """A send that did not succeed.

    permanent: retrying can never succeed (invalid number, landline, unsubscribed at the carrier); the
        row fails and falls back to the other channel. ``problem`` says what is wrong with the address,
        when the provider told us.
    outcome_unknown: the request may have reached the provider (a timeout after it left, a 5xx); the row
        must be settled by a status callback or a look-up, never by sending again blind.
    answered: with outcome_unknown, the provider did answer (an error status), so it has finished with the
        request and a look-up that finds nothing is conclusive at once. Without an answer (a read timeout,
        a dropped connection) the provider may still act on the request for a while: a look-up that finds
        nothing proves nothing until the settle window has passed (docs/architecture.md#delivery-guarantee).
    Otherwise the request certainly did not take effect and may be retried with backoff.
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        outcome_unknown: bool = False,
        answered: bool = False,
        code: str | None = None,
        problem: RecipientProblem | None = None,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent or problem is not None
        self.outcome_unknown = outcome_unknown
        self.answered = answered
        # The provider's own code, kept for the record and the logs; no code above the channels reads it.
        self.code = code
        self.problem = problem


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


@dataclass(frozen=True)
class InboundMessage:
    """A message someone sent us, as any provider delivers it.

    new_text: what triage reads: the SMS, or an email reply without its quoted history and signature.
    automatic: an auto-reply or out-of-office: stored, never answered.
    """

    channel: ChannelName
    provider_id: str  # the provider's id for it (Twilio's MessageSid, the email's Message-ID)
    sender: str  # E.164 or an address
    recipient: str
    body: str
    new_text: str
    media: Sequence[dict[str, str]] = field(default_factory=tuple)
    automatic: bool = False
    # The provider vouches for the sender (SPF or DKIM passed, or the carrier delivered the SMS): only
    # then may the message change the patient's consent.
    sender_verified: bool = True
    raw: bytes | None = None  # an email's MIME as received, for the DKIM check
    headers: tuple[tuple[str, str], ...] = ()  # an email's headers in order (the topmost first)
    from_address: str = ""  # the address in an email's From header


@dataclass(frozen=True)
class DeliveryUpdate:
    """What a provider says became of a message we sent.

    status: the outbox status it means (sent, delivered, undelivered, failed), or None for a status we do
        not act on. problem: set when the failure means this address can never be reached.
    """

    message_id: int | None  # our outbox id, carried in the callback URL
    provider_id: str
    status: MessageStatus | None
    problem: RecipientProblem | None = None
    detail: str | None = None
    code: str | None = None


@dataclass(frozen=True)
class FetchedMedia:
    content: bytes
    content_type: str


class MediaTooLarge(Exception):
    """A photo larger than we keep: left where it is, and said so on the message."""


@runtime_checkable
class MediaSource(Protocol):
    """A provider that holds the photos patients send (Twilio keeps MMS media until it is deleted)."""

    def fetch_media(self, url: str, *, max_bytes: int) -> FetchedMedia:
        """The file at ``url``; raises MediaTooLarge, or DeliveryError when it cannot be had now."""
        ...

    def delete_media(self, url: str) -> None:
        """Remove it from the provider once we keep our own copy; raises DeliveryError on failure."""
        ...
