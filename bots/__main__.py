"""`python -m bots` is `refund-bots`."""

from bots.cli import app

app(prog_name="refund-bots")
