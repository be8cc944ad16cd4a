"""``python -m issuer``: run the issuer service."""

from issuer.app import create_app
from issuer.settings import IssuerSettings
from shared.runtime import serve

settings = IssuerSettings()
serve(create_app(settings), settings)
