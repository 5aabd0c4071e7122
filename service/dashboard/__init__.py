"""What staff see and do in the dashboard: the escalation queue by severity and age with who was paged
when, the needs-reply inbox, a patient's whole timeline, upcoming bookings, a care-plan preview, and the
login rate limit (``views``, ``logins``). Read models over the other packages' tables; every change goes
through the use case that owns it (paging, replies).
"""
