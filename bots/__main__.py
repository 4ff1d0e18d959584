"""`python -m bots` is `refund-bots`."""

from bots.cli import app

if __name__ == "__main__":  # worker processes (spawn) import this module too
    app(prog_name="refund-bots")
