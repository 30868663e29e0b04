"""Contacts from CSV: good rows in, bad rows reported by line, re-imports merge and never duplicate."""

import io

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from workorders.models import Contact
from workorders.services.contacts import attributes_merge, contacts_import_csv
from workorders.tests.factories import ContactFactory

pytestmark = pytest.mark.django_db

CSV = """\
email,name,language,subscribed,attributes,city
Ana@Example.org,Ana Silva,pt-BR,yes,"{""registered"": [""VT2025""], ""vip"": true}",Lisbon
bob@example.org,Bob,,,,
"""


def import_csv(text: str):
    return contacts_import_csv(file=io.StringIO(text))


def test_good_rows_become_contacts_with_lower_case_email_and_typed_attributes():
    report = import_csv(CSV)

    assert (report.created, report.updated, report.unchanged, report.errors) == (2, 0, 0, [])
    ana = Contact.objects.get(email="ana@example.org")
    assert (ana.name, ana.language, ana.subscribed) == ("Ana Silva", "pt-br", True)
    assert ana.attributes == {"registered": ["VT2025"], "vip": True, "city": "Lisbon"}
    bob = Contact.objects.get(email="bob@example.org")
    assert (bob.name, bob.language, bob.subscribed, bob.attributes) == ("Bob", "en", True, {})


def test_bad_rows_are_reported_with_line_and_reason_and_good_rows_still_imported():
    text = (
        "email,name,language,subscribed,attributes\n"
        "good1@example.org,One,en,yes,\n"  # line 2
        "not-an-email,Two,en,yes,\n"  # line 3
        ",Three,en,,\n"  # line 4
        "four@example.org,Four,English,,\n"  # line 5
        "five@example.org,Five,en,maybe,\n"  # line 6
        'six@example.org,Six,en,,"[1, 2]"\n'  # line 7
        "seven@example.org,Seven,en,,{broken\n"  # line 8
        "GOOD1@example.org,Dup,en,,\n"  # line 9
        "eight@example.org,Eight,en,yes,,surplus\n"  # line 10
        f"nine@example.org,{'x' * 201},en,,\n"  # line 11
        "good2@example.org,Ten,fr,no,\n"  # line 12
    )

    report = import_csv(text)

    lines = [line for line, _ in report.errors]
    assert lines == [3, 4, 5, 6, 7, 8, 9, 10, 11]
    reasons = dict(report.errors)
    assert reasons[3] == "invalid email 'not-an-email'"
    assert reasons[4] == "email is empty"
    assert "language 'English'" in reasons[5]
    assert "subscribed 'maybe'" in reasons[6]
    assert reasons[7] == 'attributes must be a JSON object, e.g. {"vip": true}'
    assert reasons[8].startswith("attributes is not valid JSON")
    assert reasons[9] == "email 'good1@example.org' is already on line 2"
    assert reasons[10] == "1 more value(s) than the header has columns"
    assert reasons[11] == "name is longer than 200 characters"
    assert report.created == 2
    assert set(Contact.objects.values_list("email", "subscribed")) == {
        ("good1@example.org", True),
        ("good2@example.org", False),
    }


def test_a_nul_byte_a_byte_that_is_not_utf8_and_a_huge_value_are_each_their_rows_error_by_real_line():
    data = (
        b"email,name,attributes,city\n"
        b'one@example.org,One,,"Lis\nbon"\n'  # lines 2-3: one record
        b"two@example.org,T\x00wo,\n"  # line 4: NUL
        b"three@example.org,Tr\xeas,\n"  # line 5: Latin-1, not UTF-8
        b"four@example.org,Four," + b"x" * 131_073 + b"\n"  # line 6: over 128 KiB
        b"five@example.org,Cinq \xc3\xa9,\n"  # line 7: UTF-8
    )

    report = contacts_import_csv(file=io.BytesIO(data))

    assert report.errors == [
        (4, "contains a NUL byte (at character 18)"),
        (5, "not UTF-8 text (byte 0xea at character 21); save the file as CSV UTF-8"),
        (6, "attributes is longer than 131,072 characters (131,073)"),
    ]
    assert (report.created, report.skipped) == (2, 3)
    assert dict(Contact.objects.values_list("email", "name")) == {
        "one@example.org": "One",
        "five@example.org": "Cinq é",
    }
    assert Contact.objects.get(email="one@example.org").attributes == {"city": "Lis\nbon"}


def test_importing_the_same_file_again_creates_nothing_and_changes_nothing():
    import_csv(CSV)
    before = dict(Contact.objects.values_list("email", "updated_at"))

    report = import_csv(CSV.replace("Ana@Example.org", "ANA@example.ORG"))

    assert (report.created, report.updated, report.unchanged, report.errors) == (0, 0, 2, [])
    assert Contact.objects.count() == 2
    assert dict(Contact.objects.values_list("email", "updated_at")) == before


def test_reimport_merges_attributes_and_leaves_empty_cells_alone():
    ContactFactory(
        email="ana@example.org",
        name="Ana",
        language="pt",
        attributes={"registrations": {"VT2024": True}, "registered": ["VT2024"], "tier": "gold"},
    )
    text = (
        "email,name,language,attributes,city\n"
        'ana@example.org,,,"{""registrations"": {""VT2025"": true}, ""registered"": [""VT2025""]}",Porto\n'
    )

    report = import_csv(text)

    assert (report.created, report.updated, report.unchanged) == (0, 1, 0)
    ana = Contact.objects.get(email="ana@example.org")
    assert (ana.name, ana.language) == ("Ana", "pt")  # empty cells change nothing
    assert ana.attributes == {
        "registrations": {"VT2024": True, "VT2025": True},  # objects merge key by key
        "registered": ["VT2025"],  # anything else is replaced by the file's value
        "tier": "gold",  # keys the file does not mention stay
        "city": "Porto",
    }


def test_an_import_can_unsubscribe_but_never_resubscribes():
    ContactFactory(email="left@example.org", subscribed=False)
    ContactFactory(email="stays@example.org", subscribed=True)

    report = import_csv("email,subscribed\nleft@example.org,yes\nstays@example.org,no\n")

    assert report.errors == []
    assert dict(Contact.objects.values_list("email", "subscribed")) == {
        "left@example.org": False,
        "stays@example.org": False,
    }


def test_attributes_merge_is_recursive_for_objects_only():
    existing = {"a": {"x": 1, "y": {"deep": 1}}, "list": [1], "keep": True}
    incoming = {"a": {"y": {"other": 2}}, "list": [2]}

    assert attributes_merge(existing, incoming) == {
        "a": {"x": 1, "y": {"deep": 1, "other": 2}},
        "list": [2],
        "keep": True,
    }


def test_a_header_without_email_or_an_empty_file_is_refused_and_imports_nothing():
    with pytest.raises(ValidationError, match="no 'email' column"):
        import_csv("name,language\nAna,en\n")
    with pytest.raises(ValidationError, match="empty"):
        import_csv("")
    with pytest.raises(ValidationError, match="more than once"):
        import_csv("email,name,name\na@example.org,A,B\n")
    assert not Contact.objects.exists()


def test_import_uses_a_fixed_number_of_queries_whatever_the_row_count(django_assert_max_num_queries):
    for n in range(3):
        ContactFactory(email=f"old{n}@example.org", attributes={"old": True})
    rows = "".join(f"row{n}@example.org,Row {n},en,yes,\n" for n in range(300))
    existing = "".join(f"old{n}@example.org,Changed,,,\n" for n in range(3))
    # savepoint, advisory lock, select existing, insert, update (one CASE statement), release
    with django_assert_max_num_queries(8):
        report = import_csv("email,name,language,subscribed,attributes\n" + rows + existing)

    assert (report.created, report.updated, report.errors) == (300, 3, [])
    assert Contact.objects.filter(name="Changed", attributes={"old": True}).count() == 3


# --- the command ---------------------------------------------------------------------------------------------


def test_command_imports_good_rows_lists_bad_ones_by_line_and_exits_with_status_1(tmp_path, capsys):
    path = tmp_path / "contacts.csv"
    path.write_text("\ufeffemail,name\nok@example.org,Ok\nbroken,Nope\n", encoding="utf-8")  # Excel's BOM

    with pytest.raises(CommandError, match="1 rows were not imported") as raised:
        call_command("import_contacts", str(path))

    assert raised.value.returncode == 1
    output = capsys.readouterr().out
    assert "Contacts: created 1, updated 0, unchanged 0, skipped 1." in output
    assert "line 3: invalid email 'broken'" in output
    assert list(Contact.objects.values_list("email", flat=True)) == ["ok@example.org"]


def test_command_lists_a_line_that_is_not_utf8_and_imports_the_others(tmp_path, capsys):
    path = tmp_path / "contacts.csv"
    path.write_bytes(b"email,name\r\nana@example.org,Ana\r\nbea@example.org,B\xe9a\r\ncy@example.org,Cy\r\n")

    with pytest.raises(CommandError, match="1 rows were not imported"):
        call_command("import_contacts", str(path))

    output = capsys.readouterr().out
    assert "Contacts: created 2, updated 0, unchanged 0, skipped 1." in output
    assert "line 3: not UTF-8 text (byte 0xe9 at character 18); save the file as CSV UTF-8" in output
    assert sorted(Contact.objects.values_list("email", flat=True)) == ["ana@example.org", "cy@example.org"]


def test_command_reports_a_missing_file_and_a_bad_header_without_a_traceback(tmp_path):
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("import_contacts", str(tmp_path / "missing.csv"))
    path = tmp_path / "contacts.csv"
    path.write_text("mail,name\na@example.org,A\n", encoding="utf-8")
    with pytest.raises(CommandError, match="no 'email' column"):
        call_command("import_contacts", str(path))


def test_command_help_documents_the_header(capsys):
    with pytest.raises(SystemExit):
        call_command("import_contacts", "--help")

    assert "email,name,language,subscribed,attributes" in capsys.readouterr().out
