"""The captured-mail pages as `make demo` serves them: the real web process (the Procfile's daphne) with the demo's
settings module (emailsys.settings.local, the default of manage.py and asgi.py) and the capture directory read from
the environment by env.path, not replaced by a test's `settings` fixture."""

import re

import pytest
import requests
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from emailsys.mail_capture import captured_mail_store
from emailsys.testing import daphne_argv, free_port, port_answers, process_env, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def staff_session(base_url: str, username: str, password: str) -> requests.Session:
    session = requests.Session()
    form = session.get(f"{base_url}/admin/login/", timeout=10)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    logged_in = session.post(
        f"{base_url}/admin/login/?next=/admin/",
        data={"csrfmiddlewaretoken": csrf, "username": username, "password": password},
        headers={"Referer": f"{base_url}/admin/login/"},
        timeout=10,
    )
    assert logged_in.url == f"{base_url}/admin/", logged_in.text[:2000]
    return session


@pytest.mark.timeout(120)
@pytest.mark.parametrize("variable", ["MAIL_CAPTURE_DIR", "OUTBOX_DIR"])
def test_captured_mail_pages_answer_200_under_the_demo_settings(
    variable, processes, django_user_model, tmp_path
) -> None:
    # Hashed as the demo's settings hash (the test settings use a faster hasher the web process does not know).
    password = PBKDF2PasswordHasher().encode("demo-password", PBKDF2PasswordHasher().salt())
    django_user_model.objects.create(username="demo-admin", password=password, is_staff=True, is_superuser=True)
    directory = tmp_path / "captured"
    directory.mkdir()
    message = b"From: Sender <sender@example.com>\r\nTo: lead@example.org\r\nSubject: Quick question\r\n\r\nHello\r\n"
    stored = captured_mail_store(
        directory=directory, mail_from="sender@example.com", rcpt_tos=["lead@example.org"], content=message
    )
    port = free_port()
    env = process_env(DJANGO_SETTINGS_MODULE="emailsys.settings.local", **{variable: str(directory)})
    web = processes("web", daphne_argv(port), env=env)
    wait_until(lambda: port_answers(port) or not web.alive, timeout=60, what="daphne listening")
    assert web.alive, web.log()
    base_url = f"http://127.0.0.1:{port}"
    session = staff_session(base_url, "demo-admin", "demo-password")

    old_listing = session.get(f"{base_url}/outbox/", timeout=10)
    listing = session.get(f"{base_url}/captured/", timeout=10)
    detail = session.get(f"{base_url}/captured/{stored.name}", timeout=10)
    raw = session.get(f"{base_url}/outbox/{stored.name}?raw=1", timeout=10)

    assert (old_listing.status_code, old_listing.url) == (200, f"{base_url}/captured/")
    assert listing.status_code == 200 and "Quick question" in listing.text and str(directory) in listing.text
    assert detail.status_code == 200 and "Quick question" in detail.text and "Hello" in detail.text
    assert raw.status_code == 200 and raw.headers["Content-Type"] == "message/rfc822" and raw.content.endswith(message)
    assert session.get(f"{base_url}/captured/20260101T120000000000-0123456789ab.eml", timeout=10).status_code == 404
