"""devinbox: a development inbox and test double for e-mail (SMTP) and SMS (Twilio-compatible
and generic JSON HTTP APIs). See tools/devinbox/README.md."""

from .app import create_app
from .generic import generic_signature
from .inbox import DeliveryFailure, Inbox, SmsFault, parse_email
from .server import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    DEFAULT_GENERIC_TOKEN,
    DevInbox,
)
from .twilio import twilio_signature, valid_twilio_signature

__all__ = [
    "DEFAULT_ACCOUNT_SID",
    "DEFAULT_AUTH_TOKEN",
    "DEFAULT_GENERIC_TOKEN",
    "DeliveryFailure",
    "DevInbox",
    "Inbox",
    "SmsFault",
    "create_app",
    "generic_signature",
    "parse_email",
    "twilio_signature",
    "valid_twilio_signature",
]
