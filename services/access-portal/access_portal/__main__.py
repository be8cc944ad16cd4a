"""``python -m access_portal``: run the access portal; ``python -m access_portal migrate``: apply its migrations and exit."""

from access_portal.app import MIGRATIONS, create_app
from access_portal.settings import PortalSettings
from shared.runtime import main

main("access-portal", "access_portal", MIGRATIONS, create_app, PortalSettings)
