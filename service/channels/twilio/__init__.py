"""Twilio, in both directions: sending SMS with the real client (``sms``), and the webhooks Twilio posts —
signature checks, inbound messages, delivery statuses, TwiML answers (``webhooks``). Error codes and
statuses are translated into our words in ``codes``, the one place that knows them."""
