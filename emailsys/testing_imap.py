"""A private Dovecot IMAP server on loopback for tests: its own config, passwd-file users and Maildirs in a
temporary directory, run in the foreground (`dovecot -F`) as a ManagedProcess.

    def test_something(imap_server):
        imap_server.add_user("alice", "secret")
        imap_server.deliver("alice", b"Subject: hi\\r\\n\\r\\nbody\\r\\n")
        imap_server.set_uidvalidity("alice", "INBOX", 4242)  # or .renumber("alice"): new UIDs too

We run as root; Dovecot refuses mail access as UID 0, so the mail processes run as Debian's `dovecot` user, which
owns the Maildirs (hence a directory under /tmp that it can traverse, not pytest's 0700 tmp_path). Plaintext login
without TLS is allowed: loopback only. `make imap-server` installs Debian's dovecot-imapd when it is missing.
"""

import os
import pwd
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from emailsys.testing import ManagedProcess, free_port, port_answers, start_process, wait_until

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"
MAIL_USER = "dovecot"  # Debian's dovecot-core creates it; mail processes must not run as root

CONFIG = """\
# A test instance: loopback only; plaintext logins allowed, STARTTLS on {port} and implicit TLS on {tls_port} with a
# certificate of the test's own CA; one passwd-file per user (read at once), Maildirs under {root}.
instance_name = emailsys-test-{port}
base_dir = {root}/run
state_dir = {root}/state
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{root}/tls/server.pem
ssl_key = <{root}/tls/server.key
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
log_path = /dev/stderr
info_log_path = /dev/stderr
first_valid_uid = 1
mail_location = maildir:{root}/mail/%n/Maildir
mail_uid = {uid}
mail_gid = {gid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {root}/users/%n
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/mail/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
  }}
}}
service anvil {{
  chroot =
}}
"""


@dataclass
class DovecotServer:
    """A running test Dovecot: `host`, `port`, and helpers to add users, deliver mail and change UIDVALIDITY."""

    root: Path
    port: int  # plaintext, STARTTLS offered
    tls_port: int  # implicit TLS (IMAPS)
    process: ManagedProcess
    host: str = "127.0.0.1"
    passwords: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def config_path(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def ca_file(self) -> Path:
        """The CA that signed the server's certificate (for 127.0.0.1 and localhost): trust it with SSL_CERT_FILE."""
        return self.root / "tls" / "ca.pem"

    def add_user(self, name: str, password: str) -> str:
        """A new login (its Maildir is created on first use); returns the name once Dovecot accepts it."""
        with self._lock:
            self.passwords[name] = password
            temporary = self.root / "users" / f".{name}.new"
            temporary.write_text(f"{name}:{{PLAIN}}{password}::::::\n")
            temporary.chmod(0o644)
            temporary.replace(self.root / "users" / name)
        wait_until(lambda: self._logs_in(name), timeout=15, what=f"dovecot accepting {name}")
        return name

    def _logs_in(self, user: str) -> bool:
        """Whether Dovecot accepts the user yet (a user's file is read at the first lookup; a changed one within
        about a second)."""
        try:
            self.client(user).logout()
        except IMAPClientError:
            return False
        return True

    def client(self, user: str) -> IMAPClient:
        """A logged-in IMAPClient for `user` (the caller logs out)."""
        client = IMAPClient(self.host, port=self.port, ssl=False, timeout=10)
        client.login(user, self.passwords[user])
        return client

    def deliver(self, user: str, raw: bytes, *, folder: str = "INBOX", internal_date: datetime | None = None) -> int:
        """APPENDs one message to the user's folder (created when missing); returns its UID."""
        client = self.client(user)
        try:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            answer = client.append(folder, raw, msg_time=internal_date)
        finally:
            client.logout()
        # "[APPENDUID <uidvalidity> <uid>] Append completed." (UIDPLUS)
        text = answer.decode() if isinstance(answer, bytes) else str(answer)
        return int(text.split("]")[0].split()[-1]) if "APPENDUID" in text else 0

    def set_uidvalidity(self, user: str, folder: str, value: int) -> None:
        """Gives the folder a new UIDVALIDITY, as a server does after rebuilding its index: every UID a client
        kept for it is void. (Dovecot requires it to be higher than the current one.)"""
        self.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(value), folder)

    def renumber(self, user: str, folder: str = "INBOX") -> int:
        """Forgets the folder's UIDs, as a server whose index was lost does: Dovecot numbers the messages again from
        1 under a new UIDVALIDITY (returned; made higher than the old one should both fall in the same second)."""
        old = self.uidvalidity(user, folder)
        maildir = self.root / "mail" / user / "Maildir"
        directory = maildir if folder == "INBOX" else maildir / f".{folder}"
        for path in directory.glob("dovecot*"):  # dovecot-uidlist, dovecot.index, .index.log, .index.cache
            path.unlink()
        new = self.uidvalidity(user, folder)
        if new <= old:
            self.set_uidvalidity(user, folder, old + 1)
            new = old + 1
        return new

    def expunge(self, user: str, uid: int, folder: str = "INBOX") -> None:
        client = self.client(user)
        try:
            client.select_folder(folder)
            client.delete_messages([uid])
            client.expunge()
        finally:
            client.logout()

    def uidvalidity(self, user: str, folder: str = "INBOX") -> int:
        client = self.client(user)
        try:
            return int(client.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"])
        finally:
            client.logout()

    def doveadm(self, *args: str) -> str:
        completed = subprocess.run(
            [DOVEADM, "-c", str(self.config_path), *args], capture_output=True, text=True, timeout=30, check=False
        )
        if completed.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(args)} failed ({completed.returncode}): {completed.stderr}")
        return completed.stdout

    def stop(self) -> None:
        self.process.stop()


def dovecot_start(*, log_dir: Path) -> DovecotServer:
    """Starts a private Dovecot on a free loopback port and waits until it answers."""
    if not os.path.exists(DOVECOT):
        raise RuntimeError("dovecot is not installed: run `make imap-server` (Debian package dovecot-imapd)")
    mail_user = pwd.getpwnam(MAIL_USER)
    root = Path(tempfile.mkdtemp(prefix="emailsys-dovecot-"))
    root.chmod(0o755)  # the login and mail processes (not root) reach their sockets and Maildirs through it
    (root / "mail").mkdir()
    os.chown(root / "mail", mail_user.pw_uid, mail_user.pw_gid)
    (root / "users").mkdir()
    (root / "users").chmod(0o755)
    _certificates_write(root / "tls")
    port, tls_port = free_port(), free_port()
    config = CONFIG.format(root=root, port=port, tls_port=tls_port, uid=mail_user.pw_uid, gid=mail_user.pw_gid)
    (root / "dovecot.conf").write_text(config)
    process = start_process(
        f"dovecot-{port}", [DOVECOT, "-F", "-c", str(root / "dovecot.conf")], env=dict(os.environ), log_dir=log_dir
    )
    server = DovecotServer(root=root, port=port, tls_port=tls_port, process=process)
    try:
        wait_until(lambda: (port_answers(port) and port_answers(tls_port)) or not process.alive, timeout=30,
                   what="dovecot listening")  # fmt: skip
        if not process.alive:
            raise RuntimeError(f"dovecot exited:\n{process.log()}")
    except BaseException:
        process.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    return server


def _certificates_write(directory: Path) -> None:
    """A CA (ca.pem) and the server's key and certificate signed by it, for 127.0.0.1 and localhost."""
    import ipaddress
    from datetime import UTC, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(mode=0o755)
    now = datetime.now(tz=UTC)

    def certificate(subject: str, key, issuer: x509.Name, signer, *, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "emailsys test CA")])
    ca = certificate("emailsys test CA", ca_key, ca_name, ca_key, ca=True)
    server = certificate("localhost", server_key, ca_name, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "server.pem").write_bytes(server.public_bytes(pem))
    key_bytes = server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (directory / "server.key").write_bytes(key_bytes)
    (directory / "server.key").chmod(0o600)


def dovecot_server_fixture(log_dir: Path) -> Iterator[DovecotServer]:
    """The body of the `imap_server` fixture (conftest.py): one server per test session or xdist worker; tests keep
    apart by their own user names."""
    server = dovecot_start(log_dir=log_dir)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
