"""``python -m hospital_gateway``: run the hospital gateway; ``python -m hospital_gateway migrate``: apply its
migrations and exit."""

from hospital_gateway.app import MIGRATIONS, create_app
from hospital_gateway.settings import GatewaySettings
from shared.runtime import main

main("hospital-gateway", "hospital_gateway", MIGRATIONS, create_app, GatewaySettings)
