"""Campaign services, split by sub-domain: activities, templating, throttling (the arbiter), smtp, sending,
dispatch, operations (operator actions), imports."""
