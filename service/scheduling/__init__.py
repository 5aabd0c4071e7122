"""Where a booking becomes messages: care plans (data in ``templates/plans/``, read by ``care_plans``)
are expanded for each booking into outbox rows with their send times, and moved or cancelled when the
booking is rescheduled or cancelled, or the patient's channels change (``bookings``). It decides *when*
messages go; sending them is ``service.sending``.
"""
