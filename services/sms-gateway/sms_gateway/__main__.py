"""``python -m sms_gateway``: run the SMS gateway service; ``python -m sms_gateway migrate``: apply its migrations and exit."""

from shared.runtime import main
from sms_gateway.app import MIGRATIONS, create_app
from sms_gateway.settings import SmsSettings

main("sms-gateway", "sms_gateway", MIGRATIONS, create_app, SmsSettings)
