"""Recipient emails are stored lower-case (as imports, the API and suppressions compare them), now enforced.

Before the constraint, mixed-case emails are lower-cased. Where that makes two recipients of one lead the same
address, they are merged into one: the one that was emailed (its unsubscribe links are out there), else the
first by position. The others' send records (skipped, failed, deferred: nothing went out) move over where the
keeper has none for that step, their dry runs and activities move over, and the stronger status wins
(unsubscribed, bounced, replied, contacted). If more than one of them was emailed, merging would lose send
history: the migration stops and names them, for an operator to decide.
"""

import django.db.models.functions.text
from django.db import migrations, models
from django.db.models.functions import Lower

import emailsys.fields

# Send states in which the message (with the recipient's unsubscribe link) was or may have been handed over.
MAY_HAVE_GONE_OUT = ["claimed", "handed_over", "sent", "bounced", "unknown"]
STATUS_STRENGTH = ["not_contacted", "contacted", "replied", "bounced", "unsubscribed"]
PROFILE_FIELDS = ["name", "first_name", "last_name", "company_name", "website", "provider"]


def _merge(apps, group: list) -> None:
    """Keeps one recipient of `group` (one lead, one address in any case) and deletes the others."""
    SendRecord = apps.get_model("campaigns", "SendRecord")
    emailed = [r for r in group if SendRecord.objects.filter(recipient=r, state__in=MAY_HAVE_GONE_OUT).exists()]
    if len(emailed) > 1:
        ids = ", ".join(str(recipient.pk) for recipient in emailed)
        raise RuntimeError(
            f"Recipients {ids} of lead {group[0].lead_id} are the same address ({group[0].email.lower()}) in "
            "different case and each was emailed; delete or change all but one of them, then migrate again."
        )
    keeper = emailed[0] if emailed else group[0]
    others = [recipient.pk for recipient in group if recipient.pk != keeper.pk]
    # The others' records went nowhere (skipped, failed, deferred): the keeper's own record for a step wins.
    keeper_steps = set(SendRecord.objects.filter(recipient=keeper).values_list("step_id", flat=True))
    SendRecord.objects.filter(recipient_id__in=others, step_id__in=keeper_steps).delete()
    for record in SendRecord.objects.filter(recipient_id__in=others).order_by("pk"):
        if record.step_id in keeper_steps:
            record.delete()  # two of the others had one for this step
        else:
            keeper_steps.add(record.step_id)
            SendRecord.objects.filter(pk=record.pk).update(recipient=keeper)
    apps.get_model("campaigns", "DryRunRecord").objects.filter(recipient_id__in=others).update(recipient=keeper)
    apps.get_model("campaigns", "Activity").objects.filter(recipient_id__in=others).update(recipient=keeper)
    for other in group:
        if STATUS_STRENGTH.index(other.status) > STATUS_STRENGTH.index(keeper.status):
            keeper.status = other.status
        for name in PROFILE_FIELDS:
            if not getattr(keeper, name):
                setattr(keeper, name, getattr(other, name))
    keeper.last_contacted_at = max((r.last_contacted_at for r in group if r.last_contacted_at), default=None)
    keeper.last_step = max((r.last_step for r in group if r.last_step is not None), default=None)
    keeper.email = keeper.email.lower()
    apps.get_model("campaigns", "Recipient").objects.filter(pk__in=others).delete()
    keeper.save()


def recipient_emails_lowercase(apps, schema_editor) -> None:
    Recipient = apps.get_model("campaigns", "Recipient")
    mixed = Recipient.objects.exclude(email=Lower("email"))
    keys = sorted({(lead_id, email.lower()) for lead_id, email in mixed.values_list("lead_id", "email")})
    for lead_id, address in keys:
        group = list(
            Recipient.objects.annotate(address=Lower("email"))
            .filter(lead_id=lead_id, address=address)
            .order_by("position", "pk")
        )
        if len(group) == 1:
            Recipient.objects.filter(pk=group[0].pk).update(email=address)
        else:
            _merge(apps, group)
    # Deleting recipients (or updating a row twice) queues deferred foreign-key checks; fire them now, or
    # PostgreSQL refuses to alter the table in this transaction ("pending trigger events").
    schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0004_sender_account_esp"),
    ]

    operations = [
        migrations.RunPython(recipient_emails_lowercase, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="recipient",
            name="email",
            field=emailsys.fields.LowerCaseEmailField(help_text="Stored lower-case.", max_length=254),
        ),
        migrations.AddConstraint(
            model_name="recipient",
            constraint=models.CheckConstraint(
                condition=models.Q(("email", django.db.models.functions.text.Lower("email"))),
                name="recipient_email_lowercase",
                violation_error_message="The email must be lower-case.",
            ),
        ),
    ]
