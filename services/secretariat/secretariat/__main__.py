"""``python -m secretariat``: run the secretariat console."""

from secretariat.app import create_app
from secretariat.settings import SecretariatSettings
from shared.runtime import serve

settings = SecretariatSettings()
serve(create_app(settings), settings)
