"""``python -m sms_gateway``: run the SMS gateway service."""

from shared.runtime import serve
from sms_gateway.app import create_app
from sms_gateway.settings import SmsSettings

settings = SmsSettings()
serve(create_app(settings), settings)
