"""The words the whole code base shares: channels, outbox statuses, message kinds, severities, treatments.

Each is a ``StrEnum``, so a value read back from the database or posted as JSON compares equal to its
member, and the database constrains each column to exactly these values (migration 0003).
"""

from __future__ import annotations

from enum import StrEnum


class Channel(StrEnum):
    SMS = "sms"
    EMAIL = "email"

    @property
    def other(self) -> Channel:
        """The channel a message falls back to when this one can never reach the person."""
        return Channel.EMAIL if self is Channel.SMS else Channel.SMS


class BookingStatus(StrEnum):
    ACTIVE = "active"
    CANCELLED = "cancelled"


class MessageStatus(StrEnum):
    """The life of an outbox row; the transitions are in ``service.outbox.lifecycle``."""

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SENDING = "sending"
    UNKNOWN = "unknown"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    SUPPRESSED = "suppressed"


class MessageKind(StrEnum):
    """Why an outbox row exists, which decides the checks it passes at send time."""

    CARE = "care"  # a care-plan step: quiet hours, opt-outs and the booking's status apply
    REPLY = "reply"  # our answer to a message the patient just sent: goes even after an opt-out
    PAGE = "page"  # a staff member paged for an escalation: no quiet hours, no patient opt-outs
    STAFF_REPLY = "staff_reply"  # a staff member's answer from the dashboard, through the outbox


class Severity(StrEnum):
    """How soon a person must read a patient's message (docs/triage-labelling.md)."""

    NONE = "none"
    ROUTINE = "routine"
    URGENT = "urgent"
    EMERGENCY = "emergency"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {severity: rank for rank, severity in enumerate(Severity)}

# A clinician must see these today: they are answered with "call 911" or "a clinician will call" and page
# staff. One definition, used by triage, replies, paging and the evaluation.
ALARMING: frozenset[Severity] = frozenset({Severity.URGENT, Severity.EMERGENCY})


class Keyword(StrEnum):
    """A compliance request in a patient's message: opt out, opt back in, or ask for help."""

    STOP = "stop"
    START = "start"
    HELP = "help"


class Treatment(StrEnum):
    """The treatments with a care plan in ``templates/plans/`` (a test keeps the two in step).

    An enum rather than a scan of the folder so the API's schema lists them and nothing reads the disk to
    validate a request; adding a treatment means a plan file and a line here.
    """

    MICRONEEDLING = "microneedling"
    MICRONEEDLING_PRP = "microneedling_prp"
    RF_MICRONEEDLING = "rf_microneedling"


class RecipientProblem(StrEnum):
    """Why a channel can never reach this person at this address, as a provider reported it.

    Providers' own codes stay inside ``service.channels``; above them only these words exist.
    """

    INVALID_ADDRESS = "invalid_address"
    CANNOT_RECEIVE = "cannot_receive"
    NOT_MOBILE = "not_mobile"
    OPTED_OUT = "opted_out"

    @property
    def advice(self) -> str:
        """What staff should do, as shown on the failed message and the patient."""
        return _ADVICE[self]


_ADVICE = {
    RecipientProblem.INVALID_ADDRESS: "the phone number is not valid; correct it",
    RecipientProblem.CANNOT_RECEIVE: "the number cannot receive SMS from the clinic's number; ask for one",
    RecipientProblem.NOT_MOBILE: "the number cannot receive SMS (a landline, not a mobile); ask for a mobile",
    RecipientProblem.OPTED_OUT: "the patient opted out of SMS (replied STOP)",
}


class RiskFlag(StrEnum):
    """What a clinic knows from intake that changes a patient's care plan or the reading of their replies
    (docs/clinical-basis.md#risk-factors). A fixed vocabulary: an unknown flag is refused, never ignored."""

    ECZEMA = "eczema"
    PSORIASIS = "psoriasis"
    ROSACEA = "rosacea"
    COLD_SORE_HISTORY = "cold_sore_history"
    IMMUNOSUPPRESSION = "immunosuppression"
    DIABETES = "diabetes"
    BLOOD_THINNERS = "blood_thinners"
    AUTOIMMUNE = "autoimmune"
    KELOIDS = "keloids"
    PIH_RISK = "pih_risk"
    METAL_ALLERGY = "metal_allergy"
    ISOTRETINOIN = "isotretinoin"
    # Darker skin (Fitzpatrick types IV-VI): a higher risk of dark patches after treatment, so an extra
    # sun-protection message (docs/clinical-basis.md#pigmentation). The shipped plans have named it all
    # along; until it was a member no patient could carry it, and the message reached only pih_risk.
    FITZPATRICK_IV_VI = "fitzpatrick_iv_vi"


class SendFailure(StrEnum):
    """Why our own side could not send an outbox row: its ``error_code`` (a provider's codes are digits).
    Each needs a person (a template or our code must be fixed), so each raises an alarm at once."""

    TEMPLATE = "template"  # the message does not render (a missing template, an undefined variable)
    CRASHED = "crashed"  # our send code raised on this row MAX_SEND_CRASHES times


class EscalationStatus(StrEnum):
    OPEN = "open"  # paging until someone acknowledges
    ACKNOWLEDGED = "acknowledged"  # a person has it: paging stopped
    RESOLVED = "resolved"  # closed with a note


class EscalationSubject(StrEnum):
    """What an escalation is about: it needs no patient and no booking."""

    REPLY = "reply"  # a patient's message that triage found urgent or emergency
    CLEARANCE = "clearance"  # a booking waiting for a clinician's clearance (intake screening)
    CLINIC_ALERT = "clinic_alert"  # something wrong at the clinic: a delivery alarm, a cluster


class StepStatus(StrEnum):
    """An escalation step: one round of pages, due at a time."""

    PENDING = "pending"  # waiting for its time
    CLAIMED = "claimed"  # taken by the dispatcher, its task on the way
    PAGED = "paged"  # its pages are in the outbox
    SUPERSEDED = "superseded"  # no longer the active step (acknowledged, or replaced by a sooner one)


class InboundState(StrEnum):
    """Where a stored inbound message is in its processing (docs/architecture.md#the-inbox)."""

    RECEIVED = "received"  # stored by the webhook; the inbound worker has not finished with it
    PROCESSED = "processed"  # routed, triaged, escalated and answered, in one transaction
    FAILED = "failed"  # processing failed too often: shown to staff with its text, never dropped


class InboxState(StrEnum):
    NEEDS_REPLY = "needs_reply"
    REPLIED = "replied"
    DISMISSED = "dismissed"
