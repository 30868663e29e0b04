"""The simulator's state (the seed's FakeMail), in PostgreSQL so several web processes share it: mailboxes with
their push subscription, messages as raw RFC 5322 bytes, the numbered history (retention: older entries are
forgotten, as Gmail's are), and the notification faults."""

from django.db import models


class SimMailbox(models.Model):
    """A provider-side mailbox. `last_history_id` is the newest id handed out (allocated under this row's lock);
    `history_floor` is the highest id forgotten: a listing must start at or above it, or it answers 404."""

    address = models.CharField(max_length=254, unique=True)  # lower-case
    last_history_id = models.BigIntegerField(default=0)
    history_floor = models.BigIntegerField(default=0)
    watch_url = models.CharField(max_length=2000, blank=True, default="")  # "" = nobody subscribed
    watch_secret = models.TextField(blank=True, default="")
    watch_expiration = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "simulated mailbox"
        verbose_name_plural = "simulated mailboxes"

    def __str__(self) -> str:
        return self.address


class SimMessage(models.Model):
    """One delivered message, exactly the bytes that were sent (even malformed ones). Messages outlive their
    history entries: a forgotten entry's message can still be fetched, as in Gmail."""

    mailbox = models.ForeignKey(SimMailbox, on_delete=models.CASCADE, related_name="messages")
    email_id = models.CharField(max_length=64, unique=True)
    history_id = models.BigIntegerField()
    raw = models.BinaryField()
    internal_date = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["mailbox", "-history_id"], name="simmessage_mailbox_newest")]

    def __str__(self) -> str:
        return self.email_id


class SimHistoryEntry(models.Model):
    """A numbered change of a mailbox (here: one message added). Ids rise per mailbox, with small gaps."""

    mailbox = models.ForeignKey(SimMailbox, on_delete=models.CASCADE, related_name="history")
    history_id = models.BigIntegerField()
    message = models.ForeignKey(SimMessage, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "history_id"], name="simhistory_unique_per_mailbox"),
        ]

    def __str__(self) -> str:
        return f"{self.mailbox_id}#{self.history_id}"


class SimFaults(models.Model):
    """How notifications are delivered (one row, pk=1; all off by default). `version` rises on each change so
    every process's dispatcher re-seeds its random generator."""

    drop = models.FloatField(default=0.0)  # fraction of notifications never sent
    duplicate = models.FloatField(default=0.0)  # fraction sent twice
    delay_min_ms = models.PositiveIntegerField(default=0)
    delay_max_ms = models.PositiveIntegerField(default=0)
    reorder = models.BooleanField(default=False)  # hold a few and send them shuffled
    seed = models.BigIntegerField(null=True, blank=True)
    version = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name_plural = "simulator faults"

    def __str__(self) -> str:
        return f"faults v{self.version}"
