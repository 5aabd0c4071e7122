"""The pure core: the decisions, with no I/O, no clock reads and no database. Care-plan expansion
(``plans``), quiet hours (``quiet_hours``), phone numbers and local times at the edges (``phones``,
``timezones``), and the shared vocabulary of enums (``enums``). Functions take plain values and ``now``
and return plain values, so they are tested exhaustively and fast.
"""
