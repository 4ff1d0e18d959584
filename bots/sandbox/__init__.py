"""The sandbox legacy back-office: an order system and a payment portal to drive.

Two small server-rendered apps built like 2000s back-office software, seeded with a
deterministic dataset and able to misbehave on demand (see `faults`). They are the
default target of the demo and the test suite; a real deployment points the bots at
its own apps and adapts `selectors/*.yaml`.

    python -m bots.sandbox --reset          # orders on :8101, payments on :8102
"""
