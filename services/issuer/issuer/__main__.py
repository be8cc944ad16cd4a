"""``python -m issuer``: run the issuer service; ``python -m issuer migrate``: apply its migrations and exit."""

from issuer.app import MIGRATIONS, create_app
from issuer.settings import IssuerSettings
from shared.runtime import main

main("issuer", "issuer", MIGRATIONS, create_app, IssuerSettings)
