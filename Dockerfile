# One image for every role, chosen by the command: web (daphne, the default), each Celery worker pool, beat, flower,
# the SQS bridge, the archiver, the IMAP IDLE poller, migrations; `python manage.py probe <role>` checks each.
# docker-compose.yml, deploy/k8s and deploy/systemd run the same commands (README "Production").
#
# Runs as a non-root user with a read-only root filesystem: the only writable paths are /tmp and /app/var (media,
# captured mail, the local archive: one volume). Static files are collected at build time.
#
# Two stages: the build stage installs the pinned requirements into a virtualenv and collects static files; the
# final stage copies only the virtualenv and the application (no compiler, no pip cache, no build context).
# ARG REQUIREMENTS=requirements-demo.txt builds the demo image (compose's dev profile: smtp-capture); the default is
# the runtime set only.

FROM python:3.11-slim-bookworm AS build

ARG REQUIREMENTS=requirements.txt
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

# Requirements first: this layer is rebuilt only when they change. Every pin has a manylinux wheel.
COPY requirements.txt requirements-demo.txt /tmp/requirements/
RUN pip install --no-cache-dir -r "/tmp/requirements/${REQUIREMENTS}"

WORKDIR /app
COPY . .

# Static files are baked in (whitenoise serves them). The settings need a SECRET_KEY to load: a throwaway one for
# this RUN only, not in the image's environment. Our bytecode is compiled here (pip compiled the packages'), as the
# running image cannot write it.
RUN SECRET_KEY=collectstatic-build-only-not-a-secret DJANGO_SETTINGS_MODULE=emailsys.settings.production \
        python manage.py collectstatic --noinput \
    && python -m compileall -q /app \
    && mkdir -p var/media var/captured var/archive


FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    DJANGO_SETTINGS_MODULE=emailsys.settings.production

# A numeric user (10001): Kubernetes' runAsNonRoot can check it without a passwd lookup. The code stays root-owned;
# the process may write only var/ (the volume) and /tmp.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app

WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
RUN chown -R app:app /app/var

VOLUME ["/app/var"]
USER 10001
EXPOSE 8000

CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "emailsys.asgi:application"]
