"""Sending one outbox row: re-check it may still go, render it, hand it to its channel, record what
happened — sent, deferred to the end of quiet hours, retried later, failed (and fallen back to the other
channel), or unknown and settled with the provider (``reconcile``) — and apply the provider's delivery
updates (``delivery``). Every state change goes through ``service.outbox.lifecycle``.
"""
