"""Campaign services, split by sub-domain:

- dispatch: finding and claiming due leads;  sending: one lead's next email, exactly once;
- throttling: the arbiter (limits, waits);  smtp: delivery that knows where it failed;
- templating: rendering and the MIME message;  windows: send days and hours;
- previews: dry runs and test sends;  unsubscribes;  leads: create and stop;
- operations: operator actions (status, resets, suppression, accounts);  imports: CSV leads, whole campaigns;
- activities: the activity log.
"""
