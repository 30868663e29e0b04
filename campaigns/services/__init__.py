"""Campaign services, split by sub-domain. A campaign email runs through them in this order:

- dispatch: finding and claiming due leads (beat's tick);
- batches: a batch of claimed leads — load, plan each lead's next recipient, reserve, advance, finish;
- throttling: the arbiter (daily limits, min waits) that reserves accounts, for campaigns and event mailings;
- sends: one email — render, claim, deliver, record; an operator's resolve and resend;
- delivery: the one place that chooses SMTP (smtp: protocol and connection pool) or an ESP (esp: anymail);
- destinations: where an account's secrets may go (asked by the admin, the API, smtp and esp);
- ledger: what a send attempt's row becomes (stale claims, hand-over, failures, unknown sends), shared with
  event mailings; outcomes: the verdicts (a leaf module);
- templating: rendering and the MIME message;  windows: send days and hours;  unsubscribes;
- previews: dry runs and operator test sends;  leads: create and stop;  imports: CSV leads, whole campaigns;
- lifecycle: a campaign's status and progress resets;  recipients: recipient statuses (bulk, rebuilt);
- accounts: pause, resume, limit resets;  suppressions: the suppression list;  activities: the activity log.
"""
