# One image for every process: web (daphne), the Celery worker pools, beat, flower, migrate and smtp_capture.
# docker-compose.yml picks the process with `command:`; the default is the web server.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=emailsys.settings.production

WORKDIR /app

# Processes run as this user; the code stays root-owned, so the app can write only var/ (media, captured mail).
RUN groupadd --system app \
    && useradd --system --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app

# Requirements first: this layer is rebuilt only when requirements.txt changes. Every pin has a manylinux wheel.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .

# Static files are baked into the image (whitenoise serves them). The settings need a SECRET_KEY to load, so a
# throwaway one exists for this RUN only; it is not in the image's environment.
RUN SECRET_KEY=collectstatic-build-only-not-a-secret python manage.py collectstatic --noinput \
    && mkdir -p var/media var/captured \
    && chown -R app:app var

USER app

EXPOSE 8000

CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "emailsys.asgi:application"]
