"""The roles viewer, operator and admin: made by migrate, kept to their rules, unchanged by a second migrate."""

import pytest
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command

from campaigns.models import Campaign
from emailsys.roles import roles_ensure

pytestmark = pytest.mark.django_db
ROLES = ["viewer", "operator", "admin"]


def names(permissions) -> set[str]:
    return {f"{p.content_type.app_label}.{p.codename}" for p in permissions.select_related("content_type")}


def role_permissions() -> dict[str, set[str]]:
    return {group.name: names(group.permissions) for group in Group.objects.filter(name__in=ROLES)}


def test_after_migrate_each_role_holds_what_it_may_do() -> None:
    roles = role_permissions()

    assert set(roles) == {"viewer", "operator", "admin"}
    viewer, operator, admin = roles["viewer"], roles["operator"], roles["admin"]
    assert {"campaigns.view_campaign", "campaigns.view_senderaccount", "campaigns.view_sendrecord",
            "workorders.view_workorder", "workorders.view_mailingsend", "emailsys.view_outboxevent",
            "django_celery_beat.view_periodictask"} <= viewer  # fmt: skip
    assert all(name.split(".")[1].startswith("view_") for name in viewer)
    assert not {
        name for name in viewer if name.split(".")[0] in ("auth", "authtoken", "knox", "axes", "sessions", "admin")
    }

    assert viewer < operator
    assert {"campaigns.run_campaign", "campaigns.send_test_campaign", "campaigns.import_campaign",
            "campaigns.operate_senderaccount", "campaigns.test_senderaccount", "campaigns.operate_lead",
            "campaigns.resolve_sendrecord", "workorders.resolve_mailingsend", "workorders.run_workorder",
            "workorders.unlock_workorder", "workorders.import_contacts", "campaigns.add_lead",
            "campaigns.change_recipient", "campaigns.add_suppression",
            "workorders.add_workorder"} <= operator  # fmt: skip
    # Accounts and their secrets, templates, users and tokens are the admin's.
    assert not operator & {"campaigns.change_senderaccount", "campaigns.add_senderaccount",
                           "campaigns.change_emailtemplate", "campaigns.delete_campaign", "auth.change_user",
                           "auth.view_user", "knox.add_authtoken"}  # fmt: skip

    assert admin == names(Permission.objects.all())
    assert {"campaigns.change_senderaccount", "auth.change_user", "auth.change_group", "knox.add_authtoken"} <= admin


def test_running_migrate_again_changes_nothing() -> None:
    before = role_permissions()
    groups = list(Group.objects.order_by("pk").values_list("pk", "name"))

    call_command("migrate", verbosity=0, interactive=False)

    assert role_permissions() == before
    assert list(Group.objects.order_by("pk").values_list("pk", "name")) == groups


def test_a_permission_added_later_joins_its_role_and_hand_edits_are_undone() -> None:
    campaign_type = ContentType.objects.get_for_model(Campaign)
    Permission.objects.create(content_type=campaign_type, codename="archive_campaign", name="Can archive campaigns")
    Permission.objects.create(content_type=campaign_type, codename="view_campaign_costs", name="Can view costs")
    viewer = Group.objects.get(name="viewer")
    viewer.permissions.add(Permission.objects.get(codename="change_user"))

    roles_ensure()

    roles = role_permissions()
    assert "campaigns.archive_campaign" in roles["operator"] and "campaigns.archive_campaign" not in roles["viewer"]
    assert "campaigns.view_campaign_costs" in roles["viewer"]
    assert "auth.change_user" not in roles["viewer"]
    assert {"campaigns.archive_campaign", "campaigns.view_campaign_costs"} <= roles["admin"]


def test_a_deleted_role_is_made_again_as_it_was() -> None:
    before = role_permissions()["operator"]
    Group.objects.filter(name="operator").delete()

    counts = roles_ensure()

    assert role_permissions()["operator"] == before and counts["operator"] == len(before)
