"""Work-order services, split by sub-domain:

- contacts: the CSV import (upsert by email, attributes merged);
- segments: rule validation and compilation to SQL;
- templating: what templates see of an event;
- events: work-order events through the transactional outbox (emit, resume, the stream's handler);
- lifecycle: what operators do to a work order (validate, create, start, stop, restart, unlock);
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
