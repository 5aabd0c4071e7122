"""The silent-failure alarm: a watchdog in the web process — independent of beat, the workers and the
outbox — that notices when messages stop flowing (beat or the dispatcher silent, due messages unsent,
delivery failures spiking, an escalation step overdue), raises each alarm once, tells the clinics' level-1
staff and ALERT_EMAIL through the channels directly, and clears it when the problem ends (``checks``,
``alarms``, ``watchdog``). ``heartbeat`` is how the dispatcher proves it runs.
"""
