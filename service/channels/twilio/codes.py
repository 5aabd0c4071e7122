"""Twilio's words, turned into ours: error codes that mean an address can never be reached, and message
statuses. The only place in the code base that knows a Twilio code.

Kept deliberately small: Twilio advises against building logic on error codes (its 2024-07-10 changelog
split several), and a wrong "permanent" silently moves a patient's aftercare to the other channel, while a
wrong "transient" only costs a few capped retries.
"""

from __future__ import annotations

from service.core.enums import MessageStatus, RecipientProblem

PROBLEMS: dict[int, RecipientProblem] = {
    21211: RecipientProblem.INVALID_ADDRESS,  # the number is wrong (a typo, too short)
    21612: RecipientProblem.CANNOT_RECEIVE,  # cannot receive SMS from our sender (carrier, number type)
    21614: RecipientProblem.NOT_MOBILE,  # not a mobile number
    30006: RecipientProblem.NOT_MOBILE,  # a landline or unreachable carrier (a delivery-status code)
    21610: RecipientProblem.OPTED_OUT,  # the patient replied STOP: Twilio blocks until START
}
# Not permanent on purpose: 21408 (the account lacks Geo permission for that country) is a setting the
# clinic can fix, so it retries with the cap and then fails visibly; 30003 (handset unreachable, e.g.
# switched off) often clears by itself.

TOO_MANY_REQUESTS = 20429

# Twilio's message statuses → ours. "queued", "accepted", "sending" at Twilio all mean it has the message.
STATUSES: dict[str, MessageStatus] = {
    "accepted": MessageStatus.SENT,
    "scheduled": MessageStatus.SENT,
    "queued": MessageStatus.SENT,
    "sending": MessageStatus.SENT,
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.DELIVERED,
    "undelivered": MessageStatus.UNDELIVERED,
    "failed": MessageStatus.FAILED,
    "canceled": MessageStatus.FAILED,
}


def problem_for(code: int | str | None) -> RecipientProblem | None:
    """The problem a Twilio error code reports about the recipient, or None when it reports none."""
    try:
        return PROBLEMS.get(int(code)) if code is not None else None
    except (TypeError, ValueError):
        return None
