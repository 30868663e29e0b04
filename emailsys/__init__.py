"""emailsys: email operations on Django, Celery and Channels."""

from emailsys.celery import app as celery_app

__all__ = ("celery_app",)
