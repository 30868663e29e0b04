"""The local SMTP capture: a real SMTP conversation lands as an .eml file, listed and shown to staff."""

import signal
import smtplib
import sys
from email.message import EmailMessage

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from emailsys.testing import free_port, port_answers, process_env, wait_until

pytestmark = pytest.mark.django_db


@pytest.fixture
def capture(processes, tmp_path, settings):
    port = free_port()
    directory = settings.MAIL_CAPTURE_DIR = tmp_path / "captured"
    argv = [sys.executable, "manage.py", "smtp_capture", "--port", str(port), "--directory", str(directory)]
    server = processes("smtp_capture", argv, env=process_env())
    wait_until(lambda: port_answers(port), timeout=30, what="smtp capture listening")
    return server, port, directory


def send(port: int, subject: str) -> None:
    message = EmailMessage()
    message["From"] = "Sender <sender@example.com>"
    message["To"] = "lead@example.org"
    message["Subject"] = subject
    message.set_content("Hello in text")
    message.add_alternative("<p>Hello in <b>HTML</b></p>", subtype="html")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.send_message(message, to_addrs=["lead@example.org", "bcc@example.org"])


def test_captured_mail_is_stored_listed_and_shown(capture, admin_client, client) -> None:
    _server, port, directory = capture
    send(port, "First message")
    send(port, "Second message")
    files = wait_until(lambda: sorted(directory.glob("*.eml")) if len(list(directory.glob("*.eml"))) == 2 else None,
                       timeout=10, what="two .eml files")  # fmt: skip
    first = files[0].read_bytes()
    assert b"X-Envelope-To: <lead@example.org>, <bcc@example.org>" in first
    assert b"Subject: First message" in first

    listing = admin_client.get("/captured/").content.decode()
    assert listing.index("Second message") < listing.index("First message")  # newest first
    detail = admin_client.get(f"/captured/{files[0].name}").content.decode()
    assert "Hello in text" in detail and "First message" in detail
    raw = admin_client.get(f"/captured/{files[0].name}?raw=1")
    assert raw["Content-Type"] == "message/rfc822" and raw.content == first

    assert client.get("/captured/").status_code == 302  # anonymous: to the login page
    staff = get_user_model().objects.create_user("no-permissions", is_staff=True)
    client.force_login(staff)
    assert client.get("/captured/").status_code == 403
    assert client.get(f"/captured/{files[0].name}").status_code == 403
    staff.groups.add(Group.objects.get(name="viewer"))
    assert "First message" in client.get(f"/captured/{files[0].name}").content.decode()
    assert admin_client.get("/captured/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_the_pages_work_with_the_directory_as_the_settings_read_it(admin_client) -> None:
    assert admin_client.get("/captured/").status_code == 200
    assert admin_client.get("/captured/20260101T120000000000-0123456789ab.eml").status_code == 404


def test_the_old_outbox_addresses_redirect_permanently_to_the_captured_mail(client) -> None:
    name = "20260101T120000000000-0123456789ab.eml"

    listing = client.get("/outbox/")
    raw = client.get(f"/outbox/{name}?raw=1")

    assert (listing.status_code, listing["Location"]) == (301, "/captured/")
    assert (raw.status_code, raw["Location"]) == (301, f"/captured/{name}?raw=1")


def test_capture_server_stops_on_sigterm_and_frees_its_port(capture) -> None:
    server, port, _ = capture
    server.signal_group(signal.SIGTERM)
    server.popen.wait(timeout=10)
    assert server.popen.returncode == 0
    assert not port_answers(port)
