"""Three "hosts" on this machine against one PostgreSQL, RabbitMQ and Redis: each a set of process groups of its own
(web bound to 127.0.0.2/.3/.4, default, sending and workorders pools, and a beat competing for the beat lock).

1. rate, 1 host: a campaign of unthrottled accounts made due at once, sent by host 1 alone;
2. rate, 3 hosts: the same with the three hosts up;
3. acceptance: a campaign of 3,000 emails through 6 accounts of 500 a day each, and a work order of 1,000
   contacts, at once; when a third of the campaign is sent, every process of the host whose beat holds the lock is
   killed -9, and the host is restarted 5 s later. Judged from the SMTP log (aiosmtpd, in this process): nothing
   sent twice (per recipient and step, per work-order contact), no account past its limit, everything sent.

The scratch database, Redis and sink are bench/support's; RabbitMQ runs on 127.0.0.1:5672 (guest) and the script
makes a vhost of its own (rabbitmqctl), with quorum queues (CELERY_QUEUE_TYPE=quorum), deleted at the end.

    .venv/bin/python bench/multihost.py [--quick] [--threads 4] [--broker rabbitmq|redis] [--keep-logs]
"""

import argparse
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.support.environment import bench_environment, redis_start, scratch_database  # noqa: E402
from bench.support.tables import print_table  # noqa: E402

ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
# 6 accounts × 520 a day for the 3,000 emails of the acceptance campaign: 120 to spare, as a host killed -9 leaves
# the reservations its threads made for batches they had not sent yet held until their lease passes (see below).
ACCOUNTS, ACCOUNT_LIMIT = 6, 520
RESTART_AFTER_SECONDS = 5


@dataclass
class Host:
    index: int
    address: str
    web_port: int
    scratch: Path
    env: dict
    threads: int
    processes: list = field(default_factory=list)
    generation: int = 0

    @property
    def label(self) -> str:
        return f"host{self.index + 1}"

    def nodes(self) -> list[str]:
        return [f"{pool}-g{self.generation}@{self.label}" for pool in ("default", "sending", "workorders")]

    def start(self) -> None:
        from emailsys.testing import BIN_DIR, beat_argv, start_process, worker_argv

        self.generation += 1
        logs = self.scratch / self.label
        (logs / f"beat-{self.generation}").mkdir(parents=True, exist_ok=True)
        default, sending, workorders = self.nodes()
        commands = {
            "web": [str(BIN_DIR / "daphne"), "-b", self.address, "-p", str(self.web_port), "emailsys.asgi:application"],
            "default": worker_argv("default", node_name=default, concurrency=1),
            "sending": worker_argv("sending", node_name=sending, concurrency=self.threads),
            "workorders": worker_argv("workorders", node_name=workorders, concurrency=1),
            "beat": beat_argv(logs / f"beat-{self.generation}"),
        }
        self.processes = [
            start_process(f"{role}-{self.generation}", argv, env=self.env, log_dir=logs)
            for role, argv in commands.items()
        ]

    def kill(self) -> None:
        """SIGKILL to every process group of the host at once, like a machine losing power."""
        for process in self.processes:
            process.signal_group(signal.SIGKILL)
        for process in self.processes:
            process.popen.wait(timeout=10)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def beat_pid(self) -> int:
        return next(p.popen.pid for p in self.processes if p.name.startswith("beat"))


@contextmanager
def rabbitmq_vhost():
    """A vhost of our own on the local RabbitMQ (guest has every right on it); its URL. Deleted with its queues."""
    vhost = f"emailsys_bench_{secrets.token_hex(4)}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, timeout=60)
    try:
        subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], check=True,
                       timeout=60)  # fmt: skip
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], timeout=60)


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped bench still drops its database and vhost
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes: 300-email rate runs, 600 + 200")
    parser.add_argument("--threads", type=int, default=4, help="threads of each host's sending worker")
    parser.add_argument(
        "--broker",
        choices=["rabbitmq", "redis"],
        default="rabbitmq" if shutil.which("rabbitmqctl") else "redis",
        help="rabbitmq (default where rabbitmqctl is on the PATH: a vhost of its own, quorum queues) or redis",
    )
    parser.add_argument(
        "--lease",
        type=int,
        default=30,
        help="CAMPAIGN_SEND_LEASE_SECONDS (shipped: 300): the killed host's claimed sends are recovered after it",
    )
    parser.add_argument("--keep-logs", action="store_true")
    options = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-multihost-"))
    ok = False
    try:
        with scratch_database() as (dbname, database_url):
            if options.broker == "rabbitmq":
                with rabbitmq_vhost() as broker_url:
                    ok = run(options, scratch, database_url, broker_url)
            else:
                ok = run(options, scratch, database_url, None)
    finally:
        if ok and not options.keep_logs:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"\nprocess logs kept in {scratch}")
    sys.exit(0 if ok else 1)


def run(options, scratch: Path, database_url: str, broker_url: str | None) -> bool:
    from emailsys.testing import free_port

    redis_port = free_port()
    bench_environment(database_url, f"redis://127.0.0.1:{redis_port}/0")
    if broker_url:
        os.environ.update(CELERY_BROKER_URL=broker_url, CELERY_QUEUE_TYPE="quorum")
    # The killed host's claimed sends wait for their lease; the SMTP timeout must stay under it (loopback: 5 s).
    os.environ.update(CAMPAIGN_SEND_LEASE_SECONDS=str(options.lease), CAMPAIGN_SMTP_TIMEOUT="5")
    os.environ.update(ALLOWED_HOSTS=",".join([*ADDRESSES, "127.0.0.1", "localhost"]), MEDIA_ROOT=str(scratch / "media"))
    import django

    django.setup()
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    from django.db import connection

    from emailsys.testing import RecordingSmtpServer, process_env

    env = process_env(DJANGO_SETTINGS_MODULE="emailsys.settings.local")
    hosts = [Host(i, address, free_port(), scratch, env, options.threads) for i, address in enumerate(ADDRESSES)]
    scale = 10 if options.quick else 1
    rate_emails, campaign_emails, contacts = 3000 // scale, 3000 // scale, 1000 // scale
    redis = redis_start(redis_port, scratch)
    try:
        with RecordingSmtpServer() as smtp:
            ticks_every_second()
            hosts[0].start()
            wait_for_hosts(hosts[:1])
            say("1 host up")
            one = rate_run(smtp, emails=rate_emails, name="One host")
            say(f"1 host: {one[0]} emails in {one[1]:.1f} s")
            for host in hosts[1:]:
                host.start()
            wait_for_hosts(hosts)
            say("3 hosts up")
            three = rate_run(smtp, emails=rate_emails, name="Three hosts")
            say(f"3 hosts: {three[0]} emails in {three[1]:.1f} s")
            result = acceptance_run(
                smtp, hosts, campaign_emails=campaign_emails, contacts=contacts, scale=scale, lease=options.lease
            )
            web = [web_health(host) for host in hosts]
    finally:
        for host in hosts:
            host.stop()
        redis.stop()
        connection.close()

    broker = "RabbitMQ, quorum queues" if broker_url else "Redis"
    print(f"\nMulti-host on loopback: 3 hosts × (web, default 1, sending {options.threads} threads, workorders 1, "
          f"beat), {os.cpu_count()} cores shared, broker {broker}, sink aiosmtpd in this process, "
          f"send lease {options.lease} s")  # fmt: skip
    print_table(
        ["", "emails", "seconds", "emails/s"],
        [
            [f"1 host ({options.threads} sending threads)", one[0], f"{one[1]:.1f}", f"{one[0] / one[1]:.1f}"],
            [f"3 hosts (3 × {options.threads})", three[0], f"{three[1]:.1f}", f"{three[0] / three[1]:.1f}"],
        ],
    )
    print(f"\nAcceptance: campaign of {campaign_emails} ({ACCOUNTS} accounts × {ACCOUNT_LIMIT // scale} a day) "
          f"+ work order of {contacts} contacts; {result['killed']} killed -9 with {result['sent_at_kill']} sent, "
          f"restarted {RESTART_AFTER_SECONDS} s later")  # fmt: skip
    print_table(["", "value"], [[key, value] for key, value in result["table"].items()])
    for line in web:
        print(line)
    for problem in result["problems"]:
        print(f"! {problem}")
    return not result["problems"]


def ticks_every_second() -> None:
    """Dispatch and the work-order sweep every second, as the campaign tests' `start_engine` does."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    schedule = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)[0]
    PeriodicTask.objects.filter(name__in=["campaigns: dispatch", "workorders: sweep"]).update(interval=schedule)


def wait_for_hosts(hosts: list[Host]) -> None:
    from emailsys.celery import app
    from emailsys.testing import port_answers, wait_until

    nodes = [node for host in hosts for node in host.nodes()]
    wait_until(lambda: len(app.control.ping(destination=nodes, timeout=1)) == len(nodes), timeout=120,
               interval=0.5, what=f"workers {nodes} answering")  # fmt: skip
    for host in hosts:
        wait_until(lambda host=host: port_answers(host.web_port, host.address), timeout=60, what=f"{host.label} web")


def rate_run(smtp, *, emails: int, name: str) -> tuple[int, float]:
    """(emails, seconds from activation to the last SENT record) of an unthrottled campaign."""
    from bench.support.pipeline import campaign_activate, scenario_build
    from campaigns.models import SendRecord
    from emailsys.testing import wait_until

    campaign = scenario_build(smtp_port=smtp.port, emails=emails, accounts=20, name=name, batch_size=100)
    sent = SendRecord.objects.filter(recipient__lead__campaign=campaign, state=SendRecord.State.SENT)
    started = campaign_activate(campaign)
    wait_until(lambda: sent.count() >= emails, timeout=600, interval=0.2, what=f"{name}: {emails} sent")
    last = max(sent.values_list("sent_at", flat=True))
    return emails, last.timestamp() - started


def acceptance_run(smtp, hosts: list[Host], *, campaign_emails: int, contacts: int, scale: int, lease: int) -> dict:
    from django.db import transaction

    from campaigns.models import AccountDailyUsage, Campaign, Lead, SendRecord
    from campaigns.tests.scenarios import campaign_scenario, mail_step
    from emailsys.beat_lock import beat_lock_holder
    from emailsys.testing import wait_until
    from workorders.models import Contact, MailingSend, WorkOrder
    from workorders.services.lifecycle import workorder_start
    from workorders.services.state import workorder_steps_create
    from workorders.tests.factories import WorkOrderFactory

    limit = ACCOUNT_LIMIT // scale
    with transaction.atomic():
        scenario = campaign_scenario(smtp_port=smtp.port, accounts=ACCOUNTS, daily_limit=limit, leads=campaign_emails,
                                     recipients_per_lead=1, steps=1, batch_size=20, name="Acceptance")  # fmt: skip
        Campaign.objects.filter(id=scenario.campaign.id).update(status=Campaign.Status.DRAFT)
    addresses = [f"wo{n}@contacts.test" for n in range(contacts)]
    Contact.objects.bulk_create([Contact(email=address, name=f"Guest {n}", language="en")
                                 for n, address in enumerate(addresses)])  # fmt: skip
    work_order = WorkOrderFactory(account__smtp_port=smtp.port, auto_approve=True)
    workorder_steps_create(work_order=work_order)
    before = len(smtp.snapshot())

    from bench.support.pipeline import campaign_activate

    campaign_sent = SendRecord.objects.filter(recipient__lead__campaign=scenario.campaign, state=SendRecord.State.SENT)
    started = campaign_activate(scenario.campaign)
    workorder_start(work_order_id=work_order.id)
    wait_until(lambda: campaign_sent.count() >= campaign_emails // 3, timeout=600, interval=0.05,
               what="a third of the campaign sent")  # fmt: skip
    holder = beat_lock_holder()
    victim = next(h for h in hosts if holder and holder["name"].endswith(f" pid {h.beat_pid()}"))
    sent_at_kill = campaign_sent.count()
    victim.kill()
    killed_at = time.time()
    say(f"{victim.label} (beat lock holder) killed -9 with {sent_at_kill} campaign emails sent")
    survivors = {h.beat_pid(): h for h in hosts if h is not victim}
    new_holder = wait_until(lambda: holder_host(beat_lock_holder(), survivors), timeout=60, interval=0.05,
                            what="a surviving beat taking the lock")  # fmt: skip
    takeover = time.time() - killed_at
    say(f"beat lock taken by {new_holder.label} {takeover:.2f} s after the kill")
    wait_until(lambda: time.time() - killed_at >= RESTART_AFTER_SECONDS, timeout=60, interval=0.1, what="a pause")
    victim.start()
    wait_for_hosts([victim])
    say(f"{victim.label} restarted")

    leads_left = Lead.objects.filter(campaign=scenario.campaign, state=Lead.State.IN_PROGRESS)

    def done() -> bool:
        status = WorkOrder.objects.values_list("status", flat=True).get(id=work_order.id)
        return not leads_left.exists() and status == WorkOrder.Status.COMPLETE

    try:
        wait_until(done, timeout=lease + 300, interval=0.5, what="the campaign and the work order finished")
    except TimeoutError as error:
        unfinished = str(error)
    else:
        unfinished = ""
    elapsed = time.time() - started
    quiet_since = len(smtp.snapshot())
    time.sleep(5)  # a quiet spell of 5 dispatch ticks: anything sent twice late would arrive now
    mails = smtp.snapshot()[before:]

    campaign_mails = [m for m in mails if m.rcpt_tos[0].endswith("@customer.test")]
    order_mails = [m for m in mails if m.rcpt_tos[0].endswith("@contacts.test")]
    per_step = Counter((m.rcpt_tos[0], mail_step(m)) for m in campaign_mails)
    per_contact = Counter(m.rcpt_tos[0] for m in order_mails)
    per_account = Counter(m.mail_from for m in campaign_mails)
    duplicates = sum(n - 1 for n in per_step.values()) + sum(n - 1 for n in per_contact.values())
    problems = []
    if duplicates:
        problems.append(f"{duplicates} duplicates: {[k for k, n in (per_step + per_contact).items() if n > 1][:10]}")
    if max(per_account.values()) > limit:
        problems.append(f"an account past its limit of {limit}: {dict(per_account)}")
    # A send handed to SMTP when its host died has an unknown outcome: counted, never retried (at most once).
    records = SendRecord.objects.filter(recipient__lead__campaign=scenario.campaign)
    states = Counter(records.values_list("state", flat=True))
    unknown = set(records.filter(state=SendRecord.State.UNKNOWN).values_list("recipient__email", flat=True))
    delivered = {rcpt for rcpt, _ in per_step}
    missing = {f"r0.lead{n}@customer.test" for n in range(campaign_emails)} - delivered
    if missing - unknown:
        problems.append(f"{len(missing - unknown)} campaign recipients got nothing: {sorted(missing - unknown)[:10]}")
    if len(per_contact) != contacts:
        problems.append(f"work order: {len(per_contact)}/{contacts} contacts got their email")
    if states.get(SendRecord.State.SENT, 0) + len(unknown) != campaign_emails:
        problems.append(f"campaign send records: {dict(states)}")
    if len(mails) - (quiet_since - before) > 0:
        problems.append("mail arrived during the quiet spell after everything was recorded as sent")
    if unfinished:
        problems.append(unfinished)
    # What the arbiter counted against each account today, next to the sends it has records of.
    usage = dict(AccountDailyUsage.objects.filter(account__in=scenario.accounts).values_list("account_id", "reserved"))
    counted = Counter(records.filter(state__in=[SendRecord.State.SENT, SendRecord.State.UNKNOWN])
                      .values_list("account_id", flat=True))  # fmt: skip
    lost = sum(usage.get(account.id, 0) - counted[account.id] for account in scenario.accounts)
    recorded = MailingSend.objects.filter(work_order=work_order, is_test=False, state="sent").count()
    return {
        "killed": victim.label,
        "sent_at_kill": sent_at_kill,
        "problems": problems,
        "table": {
            "campaign emails sent (distinct recipient × step)": f"{len(per_step)} / {campaign_emails}",
            "work-order emails sent (distinct contacts)": f"{len(per_contact)} / {contacts} ({recorded} recorded)",
            "duplicates": duplicates,
            "campaign sends of unknown outcome (delivered / not)": f"{len(unknown & delivered)} / {len(missing)}",
            "most sent by one account": f"{max(per_account.values())} (limit {limit})",
            "limit reservations lost with the killed host (counted, never sent)": lost,
            "beat lock: killed holder → survivor": f"{victim.label} → {new_holder.label}",
            "beat takeover (kill -9 → lock taken), s": f"{takeover:.2f}",
            "both jobs, activation → done, s": f"{elapsed:.1f}",
            "emails/s over the whole acceptance run": f"{(len(per_step) + len(per_contact)) / elapsed:.1f}",
        },
    }


def holder_host(holder: dict | None, by_pid: dict[int, Host]) -> Host | None:
    if holder is None:
        return None
    return by_pid.get(int(holder["name"].rpartition(" pid ")[2]))


def web_health(host: Host) -> str:
    """What the host's own web process says about beat: its /healthz, on its own address."""
    try:
        with urllib.request.urlopen(f"http://{host.address}:{host.web_port}/healthz", timeout=10) as response:
            body, status = json.load(response), response.status
    except urllib.error.HTTPError as error:  # 503 still carries the JSON
        body, status = json.load(error), error.code
    except OSError as error:
        return f"{host.label} web {host.address}: no answer ({error})"
    beat = body["components"]["beat"]
    holder = (beat.get("extra") or {}).get("lock_holder") or {}
    unhealthy = ", ".join(body["unhealthy"]) or "none"
    return (f"{host.label} web {host.address}:{host.web_port}: /healthz {status} (unhealthy: {unhealthy}), "
            f"beat: {beat['detail']}, lock holder: {holder.get('name')}")  # fmt: skip


if __name__ == "__main__":
    main()
