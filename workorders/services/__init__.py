"""Work-order services, split by sub-domain:

- contacts: the CSV import (upsert by email, attributes merged);
- segments: compiling rules to SQL (what a rule may be is checked in `workorders.validators`);
- templating: what templates see of an event;
- stream: the work-order stream on the event bus (emit through the transactional outbox, resume);
- events: the stream's handler (settings.EVENT_HANDLERS), above the pipeline it runs;
- lifecycle: what operators do to a work order (create, start, stop, restart, unlock);
- sweep: beat's sweeper (dead workers' work orders, due sleepers);
- state: a work order's steps and fields, a stop taking effect (written by operator actions and the pipeline);
- live: the snapshot broadcast after commit;
- locking: the work-order lease;
- steps: the step pipeline a worker runs;
- mailings: one event-mailing email, sent exactly once;
- unsubscribes: the unsubscribe link and one-click POST.

What models' `clean()` checks (languages, subjects, testers, segment rules) is in `workorders.validators`, which
imports no module of ours: models never import services.
"""
