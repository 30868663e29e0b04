"""Creates a campaign with its steps, templates and sender accounts from a JSON or YAML file.

The format is documented in campaigns/services/imports.py (and the README). Everything is checked first and
every problem is listed with its place in the file (e.g. steps[1].template.subject); nothing is created
unless the whole file is valid.
"""

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from audit.commands import OperatorCommand
from campaigns.services.imports import campaign_data_parse, campaign_import
from emailsys.management.imports import validation_text


class Command(OperatorCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="campaign.json, campaign.yaml or campaign.yml")

    def handle(self, *args, file: str, **options) -> None:
        try:
            with open(file, encoding="utf-8-sig") as handle:
                text = handle.read()
        except OSError as error:
            raise CommandError(f"Cannot read {file}: {error.strerror}") from None
        except UnicodeDecodeError:
            raise CommandError(f"{file} is not UTF-8 text.") from None
        try:
            campaign = campaign_import(data=campaign_data_parse(text=text, file_name=file))
        except ValidationError as error:
            raise CommandError(f"{file} was not imported:\n{validation_text(error)}") from None
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported campaign {campaign.pk} {campaign.name!r} ({campaign.status}): "
                f"{campaign.steps.count()} steps, {campaign.account_settings.count()} accounts."
            )
        )
