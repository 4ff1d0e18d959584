"""refund-bots: RPA bots that process customer refunds against legacy web UIs."""

__version__ = "0.1.0"
