"""Helpers of the bench scripts, in a package so that `make bench` (`for script in bench/*.py`) runs none of it.

- environment: the scratch PostgreSQL database, the bench's own Redis and the settings every process inherits
- sinks: the SMTP sinks (Postfix's smtp-sink, else aiosmtpd in a process of its own)
- raw: the raw ceiling, the same ingredients as the pipeline without its bookkeeping
- pipeline: the campaign pipeline run by beat and Celery workers, and its in-process profile
- measure: CPU of processes and of the scratch database's backends, read from /proc
- tables: send_throughput's printed tables
"""
