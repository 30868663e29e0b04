"""Work-order services, split by sub-domain:

- contacts: the CSV import (upsert by email, attributes merged);
- segments: rule validation and compilation to SQL, counts;
- events: what templates see of an event.
"""
