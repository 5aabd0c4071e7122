"""The ways we reach a person and the ways they reach us: one package per provider, both directions.

``base`` is the interface (send, look up; inbound messages and delivery updates as plain values);
``twilio`` (SMS), ``smtp`` (email out), ``mailgun`` (email in) and ``console`` (development: messages in
the log) implement it. Nothing above this package knows a provider's codes, fields or signatures.
``build_channels`` is the one place that decides which provider each channel uses.
"""

from __future__ import annotations

from service.channels.base import Channel, DeliveryError, OutgoingMessage, ProviderReceipt
from service.channels.console import ConsoleChannel
from service.channels.smtp import SMTPEmail
from service.channels.twilio.sms import TwilioSMS
from service.core.enums import Channel as ChannelName
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


def build_channels(settings: Settings) -> dict[ChannelName, Channel]:
    """SMS through Twilio when TWILIO_ACCOUNT_SID is set, email through SMTP when SMTP_HOST is set;
    otherwise the console, so a fresh laptop runs with no provider at all."""
    if settings.TWILIO_ACCOUNT_SID and not settings.TWILIO_AUTH_TOKEN:
        # Refuse at start-up: every send would get a 401 and be retried until it failed, hours later.
        raise ValueError("TWILIO_AUTH_TOKEN must be set when TWILIO_ACCOUNT_SID is")
    sms: Channel = TwilioSMS.from_settings(settings) if settings.TWILIO_ACCOUNT_SID else ConsoleChannel("sms")
    email: Channel = SMTPEmail.from_settings(settings) if settings.SMTP_HOST else ConsoleChannel("email")
    return {ChannelName.SMS: sms, ChannelName.EMAIL: email}
