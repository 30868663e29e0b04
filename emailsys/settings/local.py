"""Development: DEBUG on by default, everything on this machine's loopback."""

import os

os.environ.setdefault("DEBUG", "true")

from .base import *  # noqa: E402,F403
