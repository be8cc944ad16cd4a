"""``python -m devoidc``: the development OpenID provider on its own (DEVOIDC_* environment variables)."""

import json
import os
import signal
from pathlib import Path

from devoidc.provider import DEFAULT_CLIENTS, DEFAULT_USERS, DevOidc

provider = DevOidc(
    issuer=os.environ.get("DEVOIDC_ISSUER"),
    host=os.environ.get("DEVOIDC_HOST", "127.0.0.1"),
    port=int(os.environ.get("DEVOIDC_PORT", "8030")),
    users=json.loads(os.environ["DEVOIDC_USERS"]) if "DEVOIDC_USERS" in os.environ else DEFAULT_USERS,
    clients=json.loads(os.environ["DEVOIDC_CLIENTS"]) if "DEVOIDC_CLIENTS" in os.environ else DEFAULT_CLIENTS,
    key_file=Path(os.environ["DEVOIDC_KEY_FILE"]) if "DEVOIDC_KEY_FILE" in os.environ else None,
).start()
print(f"development OpenID provider at {provider.issuer}", flush=True)
signal.sigwait({signal.SIGINT, signal.SIGTERM})
provider.stop()
