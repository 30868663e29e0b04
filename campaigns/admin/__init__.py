"""Operator console for campaigns. Actions, the send-test page and adding a lead or a suppression call services;
lists and panels read the selectors (one query for the rows, whatever the page size).

Secrets: an account's SMTP password and ESP secret are write-only here. The form fields never render a value,
an empty submission keeps the stored secret, and secrets are in no list, read-only field or log message.
Send records, activities, dry runs, test sends and usage counters are read-only: they are the record of
what happened, changed only by services (e.g. "mark sent" on an unknown send).
"""

from campaigns.admin import accounts, campaigns, leads, records  # noqa: F401 (registers the admins)
