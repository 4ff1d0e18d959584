"""What a run leaves for people: the reconciliation, the report and escalations workbooks,
and the cell guard that keeps customer text from becoming a formula."""
