"""The outbox: every message we owe someone, as a row that is claimed, sent and settled exactly once.

This package is the one owner of an outbox row's state (``lifecycle``: the transition table and one
guarded UPDATE per event), the dispatcher's pass that claims due rows and keeps stuck ones moving
(``dispatch``), and the read-only questions others ask of the table (``queries``). It never talks to a
provider and never decides what a message says: that is ``service.sending``.
"""
