"""``python -m secretariat``: run the secretariat console; ``python -m secretariat migrate``: apply its migrations and exit."""

from secretariat.app import MIGRATIONS, create_app
from secretariat.settings import SecretariatSettings
from shared.runtime import main

main("secretariat", "secretariat", MIGRATIONS, create_app, SecretariatSettings)
