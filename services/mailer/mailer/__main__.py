"""``python -m mailer``: run the mailer service."""

from mailer.app import create_app
from mailer.settings import MailerSettings
from shared.runtime import serve

settings = MailerSettings()
serve(create_app(settings), settings)
