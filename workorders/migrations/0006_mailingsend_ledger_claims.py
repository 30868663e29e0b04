"""A mailing send holds a claim (token and lease) exactly while in flight; a handed-over one has its time.

Before each constraint, the rows it would refuse are repaired as campaigns' 0006 does for send records: settled
or deferred sends lose a stray claim; claimed or handed-over ones missing one get a token and an already expired
lease (`updated_at`), so the next run settles them as a dead run's; handed-over ones get `handed_over_at`.
"""

import uuid

from django.db import migrations, models
from django.db.models import Q

IN_FLIGHT = ["claimed", "handed_over"]


def mailing_sends_repair(apps, schema_editor) -> None:
    model = apps.get_model("workorders", "MailingSend")
    model.objects.exclude(state__in=IN_FLIGHT).filter(
        Q(claim_token__isnull=False) | Q(claimed_until__isnull=False)
    ).update(claim_token=None, claimed_until=None)
    for pk in model.objects.filter(state__in=IN_FLIGHT, claim_token__isnull=True).values_list("pk", flat=True):
        model.objects.filter(pk=pk).update(claim_token=uuid.uuid4())
    model.objects.filter(state__in=IN_FLIGHT, claimed_until__isnull=True).update(claimed_until=models.F("updated_at"))
    model.objects.filter(state="handed_over", handed_over_at__isnull=True).update(handed_over_at=models.F("updated_at"))
    # A row updated twice in this transaction queues its deferred foreign-key checks; fire them now, or PostgreSQL
    # refuses to alter the table in this transaction ("pending trigger events").
    schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0006_sendrecord_ledger_claims"),
        ("workorders", "0005_mailingsend_resolved_by"),
    ]

    operations = [
        migrations.RunPython(mailing_sends_repair, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="mailingsend",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(
                        ("state__in", ["claimed", "handed_over"]),
                        ("claim_token__isnull", False),
                        ("claimed_until__isnull", False),
                    ),
                    models.Q(
                        models.Q(("state__in", ["claimed", "handed_over"]), _negated=True),
                        ("claim_token__isnull", True),
                        ("claimed_until__isnull", True),
                    ),
                    _connector="OR",
                ),
                name="workorders_mailingsend_claimed_while_in_flight",
                violation_error_message="A claimed or handed-over send has a claim token and lease; others have none.",
            ),
        ),
        migrations.AddConstraint(
            model_name="mailingsend",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("state", "handed_over"), _negated=True),
                    ("handed_over_at__isnull", False),
                    _connector="OR",
                ),
                name="workorders_mailingsend_handed_over_has_time",
                violation_error_message="A handed-over send has the time it was handed over.",
            ),
        ),
    ]
