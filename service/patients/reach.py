"""Can we reach this patient on this channel? One answer for planning, sending and falling back."""

from __future__ import annotations

from service.core.enums import Channel
from service.models import Patient


def address(patient: Patient, channel: Channel | str) -> str | None:
    return patient.phone if channel == Channel.SMS else patient.email


def missing_address(patient: Patient, channel: Channel | str) -> str | None:
    if not address(patient, channel):
        return f"the patient has no {'phone number' if channel == Channel.SMS else 'email address'}"
    return None


def contact_problem(patient: Patient, channel: Channel | str) -> str | None:
    """Why a scheduled message may not go to this patient on this channel now; None when it may.

    Checked when a message is due, not when it is planned: a patient may text STOP after booking, and
    START again before the next message.
    """
    reason = missing_address(patient, channel)
    if reason:
        return reason
    if channel == Channel.SMS:
        if not patient.sms_consent:
            return "the patient has not consented to SMS"
        if patient.sms_opted_out_at is not None:
            return "the patient opted out of SMS"
        if patient.sms_unreachable_reason:
            return f"SMS cannot reach this patient: {patient.sms_unreachable_reason}"
    elif patient.email_opted_out_at is not None:
        return "the patient unsubscribed from email"
    return None


def planned_channels(patient: Patient) -> list[Channel]:
    """The channels a booking's messages are planned on: chosen by the patient, with an address (and
    consent for SMS). Opt-outs are checked at send time (``contact_problem``)."""
    return [
        channel
        for channel in (Channel.SMS, Channel.EMAIL)
        if channel in patient.channels
        and not missing_address(patient, channel)
        and (channel != Channel.SMS or patient.sms_consent)
    ]
