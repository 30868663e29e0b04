"""Work-order services, split by sub-domain:

- contacts: the CSV import (upsert by email, attributes merged);
- segments: rule validation and compilation to SQL;
- templating: what templates see of an event;
- events: work-order events through the transactional outbox (emit, resume, the stream's handler);
- locking: the work-order lease;
- steps: the step pipeline a worker runs;
- mailings: one event-mailing email, sent exactly once;
- unsubscribes: the unsubscribe link and one-click POST.
"""
