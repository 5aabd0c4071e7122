"""The channels and the one place that decides which provider each uses (DESIGN §8, Settings)."""

from __future__ import annotations

from service.channels.base import Channel, DeliveryError, OutgoingMessage, ProviderReceipt
from service.channels.console import ConsoleChannel
from service.channels.smtp_email import SMTPEmail
from service.channels.twilio_sms import TwilioSMS
from service.settings import Settings

__all__ = [
    "Channel",
    "ConsoleChannel",
    "DeliveryError",
    "OutgoingMessage",
    "ProviderReceipt",
    "SMTPEmail",
    "TwilioSMS",
    "build_channels",
]


def build_channels(settings: Settings) -> dict[str, Channel]:
    """SMS through Twilio when TWILIO_ACCOUNT_SID is set, email through SMTP when SMTP_HOST is set;
    otherwise the console, so a fresh laptop runs with no provider at all."""
    if settings.TWILIO_ACCOUNT_SID and not settings.TWILIO_AUTH_TOKEN:
        # Refuse at start-up: every send would get a 401 and be retried until it failed, hours later.
        raise ValueError("TWILIO_AUTH_TOKEN must be set when TWILIO_ACCOUNT_SID is")
    sms: Channel = TwilioSMS.from_settings(settings) if settings.TWILIO_ACCOUNT_SID else ConsoleChannel("sms")
    email: Channel = SMTPEmail.from_settings(settings) if settings.SMTP_HOST else ConsoleChannel("email")
    return {"sms": sms, "email": email}
