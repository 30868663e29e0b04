"""Settings for the processes the work-order acceptance tests start: the test settings, plus the work-order lease
and time slice read from the environment. base.py reads neither from the environment (locking.py and steps.py use
`getattr(settings, ..., default)`), and a test needs a short lease to see a dead worker's work taken over."""

from emailsys.settings.base import env
from emailsys.settings.test import *  # noqa: F403

WORKORDER_LEASE_SECONDS = env.float("WORKORDER_LEASE_SECONDS", default=30)
WORKORDER_SLICE_SECONDS = env.float("WORKORDER_SLICE_SECONDS", default=120)
