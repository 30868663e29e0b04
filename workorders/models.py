"""Work orders, their steps, contacts and segments (issue 4)."""
