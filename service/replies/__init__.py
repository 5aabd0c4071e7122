"""Where a patient's message is received, understood and answered: stored once per provider id, matched
to the patient and their most recent booking, compliance keywords honoured, triaged (``service.triage``),
and answered in the patient's language (``receive``, ``answers``). Urgent and emergency messages are left
for ``service.paging``.
"""
