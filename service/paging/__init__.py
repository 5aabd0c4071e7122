"""Where staff are paged: an urgent or emergency message opens an escalation (or joins the patient's open
one); its steps page the clinic's levels of staff through the outbox until someone acknowledges — by SMS
("ACK 42"), the dashboard or the API — and it is resolved with a note (``escalations``, ``steps``,
``staff_commands``). Only ``lifecycle`` writes an escalation or a step, one guarded UPDATE per event. The
policy (who next, when) is pure, in ``service.core.escalation``; the due step is claimed from the database
by the beat-driven dispatcher, never held as an ETA in the broker.
"""
