"""Deciding a case: the refund policy, fraud signals, the line items a customer names,
the decision snapshot, and replaying stored decisions under a changed policy. Pure logic:
nothing here opens a browser or a legacy app."""
