"""Campaigns, sequence steps, leads, sender accounts and send records (issue 3)."""
