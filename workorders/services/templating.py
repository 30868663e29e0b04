"""What email templates see of an event (the Prepare step renders with this)."""

from typing import Any

from workorders.models import Event


def event_template_context(*, event: Event) -> dict[str, Any]:
    """Template variables for `event`. `zoom_id` reads "In-Person" for an in-person event, as the mailings of
    the system we replace did, so one template serves both kinds."""
    return {
        "event_code": event.code,
        "sub_event": event.sub_event,
        "event_name": event.name,
        "in_person": event.attendance == Event.Attendance.IN_PERSON,
        "zoom_id": event.zoom_label,
        "registration_link": event.registration_link,
        "starts_at": event.starts_at,
    }
