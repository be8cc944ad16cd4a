"""``python -m access_portal``: run the access portal."""

from access_portal.app import create_app
from access_portal.settings import PortalSettings
from shared.runtime import serve

settings = PortalSettings()
serve(create_app(settings), settings)
