"""Patients as someone we may contact: on which channels, with what consent, and why not.

This package owns the patient's contact state (opt-outs, opt-ins, addresses a provider said can never be
reached) and answers the one question every sender asks — can we reach this patient on this channel now
(``reach``) — and signs the links that let a patient unsubscribe (``links``). It never sends anything.
"""
