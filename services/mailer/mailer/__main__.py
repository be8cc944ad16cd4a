"""``python -m mailer``: run the mailer service; ``python -m mailer migrate``: apply its migrations and exit."""

from mailer.app import MIGRATIONS, create_app
from mailer.settings import MailerSettings
from shared.runtime import main

main("mailer", "mailer", MIGRATIONS, create_app, MailerSettings)
