"""The provider's endpoints and its in-memory state (codes live a minute, nothing is persisted)."""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import urlencode

import uvicorn
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from joserfc import jwt
from joserfc.jwk import RSAKey

CODE_SECONDS = 60

# Staff as a hospital directory would describe them: one secretary per department, a supervisor, and a
# manager who follows the figures of two departments.
DEFAULT_USERS = [
    {
        "sub": "u-cardio-1",
        "username": "alice",
        "name": "Alice Martin",
        "roles": ["secretary"],
        "departments": ["cardiology"],
    },
    {
        "sub": "u-neuro-1",
        "username": "bruno",
        "name": "Bruno Keller",
        "roles": ["secretary"],
        "departments": ["neurology"],
    },
    {"sub": "u-super-1", "username": "sophie", "name": "Sophie Rossi", "roles": ["supervisor"], "departments": []},
    {
        "sub": "u-manager-1",
        "username": "marc",
        "name": "Marc Weber",
        "roles": ["manager"],
        "departments": ["cardiology", "neurology"],
    },
]
DEFAULT_CLIENTS: list[dict] = [
    {
        "client_id": "secretariat-console",
        "client_secret": "dev-console-secret",
        "redirect_uris": ["http://127.0.0.1:8004/auth/callback", "http://localhost:8004/auth/callback"],
    },
    {
        "client_id": "his-cardiology",
        "client_secret": "dev-his-cardiology-secret",
        "departments": ["cardiology"],
        "scope": "convocations.read convocations.act",
        "audience": "secretariat-api",
    },
    {
        "client_id": "his-neurology",
        "client_secret": "dev-his-neurology-secret",
        "departments": ["neurology"],
        "scope": "convocations.read convocations.act",
        "audience": "secretariat-api",
    },
    # Hospital systems sending FHIR or CSV to the hospital gateway; the sandbox client's letters only ever
    # reach the development inbox (the gateway's HOSPITAL_SYSTEMS says which client is which system).
    {
        "client_id": "his-gateway",
        "client_secret": "dev-his-gateway-secret",
        "scope": "convocations.submit",
        "audience": "hospital-gateway",
    },
    {
        "client_id": "his-sandbox",
        "client_secret": "dev-his-sandbox-secret",
        "scope": "convocations.submit",
        "audience": "hospital-gateway",
    },
]


def _text(value: object) -> str | None:
    """A form field as text (an uploaded file where text was expected counts as absent)."""
    return value if isinstance(value, str) else None


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def load_or_create_key(path: Path | None) -> RSAKey:
    """The signing key: kept in a file so that tokens survive a restart (and tests can sign with it)."""
    if path and path.exists():
        return RSAKey.import_key(path.read_bytes(), {"use": "sig", "alg": "RS256"})
    key = RSAKey.generate_key(2048, {"use": "sig", "alg": "RS256"})
    key.ensure_kid()
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(key.as_pem(private=True))
        path.chmod(0o600)
    return key


@dataclass
class DevOidc:
    issuer: str | None = None  # default http://<host>:<port>
    host: str = "127.0.0.1"
    port: int = 0
    users: list[dict] = field(default_factory=lambda: [dict(u) for u in DEFAULT_USERS])
    clients: list[dict] = field(default_factory=lambda: [dict(c) for c in DEFAULT_CLIENTS])
    key_file: Path | None = None
    token_seconds: int = 300
    roles_claim: str = "roles"
    departments_claim: str = "departments"
    tls: tuple[str, str] | None = None  # (certificate file, key file): served over HTTPS, as a real provider

    def __post_init__(self) -> None:
        self.key = load_or_create_key(self.key_file)
        if not self.key.kid:
            self.key.ensure_kid()
        self._codes: dict[str, dict] = {}
        self.jwks_served = 0  # how often a client fetched the key set (a relying party's refetches show here)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # --- tokens -------------------------------------------------------------------------------

    def sign(self, claims: dict) -> str:
        return jwt.encode({"alg": "RS256", "kid": self.key.kid, "typ": "JWT"}, claims, self.key)

    def _client(self, client_id: str | None, secret: str | None) -> dict | None:
        for c in self.clients:
            if c["client_id"] == client_id and secrets.compare_digest(c["client_secret"], secret or ""):
                return c
        return None

    def _user(self, username: str) -> dict | None:
        return next((u for u in self.users if u["username"] == username), None)

    def id_token(self, user: dict, client_id: str, nonce: str | None, now: int | None = None) -> str:
        now = now or int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user["sub"],
            "aud": client_id,
            "iat": now,
            "exp": now + self.token_seconds,
            "auth_time": now,
            "name": user["name"],
            "preferred_username": user["username"],
            self.roles_claim: user["roles"],
            self.departments_claim: user["departments"],
        }
        if nonce:
            claims["nonce"] = nonce
        return self.sign(claims)

    def access_token(self, client: dict, now: int | None = None) -> str:
        now = now or int(time.time())
        return self.sign(
            {
                "iss": self.issuer,
                "sub": client["client_id"],
                "aud": client.get("audience"),
                "iat": now,
                "exp": now + self.token_seconds,
                "client_id": client["client_id"],
                "scope": client.get("scope", ""),
                self.departments_claim: client.get("departments", []),
                "jti": secrets.token_urlsafe(12),
            }
        )

    # --- HTTP ---------------------------------------------------------------------------------

    def app(self) -> FastAPI:
        app = FastAPI(title="Development OpenID provider", docs_url=None, redoc_url=None, openapi_url=None)

        @app.get("/healthz")
        async def healthz() -> dict:
            return {"status": "ok", "service": "devoidc"}

        @app.get("/.well-known/openid-configuration")
        async def discovery() -> dict:
            return {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "client_credentials"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "scopes_supported": ["openid", "profile"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            }

        @app.get("/jwks")
        async def jwks() -> dict:
            self.jwks_served += 1
            return {"keys": [self.key.as_dict(private=False)]}

        @app.get("/authorize", response_class=HTMLResponse)
        async def authorize(request: Request):
            q = request.query_params
            client = next((c for c in self.clients if c["client_id"] == q.get("client_id")), None)
            if client is None or q.get("redirect_uri") not in client.get("redirect_uris", []):
                return HTMLResponse("<h1>Unknown client or redirect URI</h1>", status_code=400)
            if (
                q.get("response_type") != "code"
                or q.get("code_challenge_method") != "S256"
                or not q.get("code_challenge")
                or "openid" not in (q.get("scope") or "").split()
            ):
                return HTMLResponse(
                    "<h1>Authorization code with PKCE (S256) and scope openid required</h1>", status_code=400
                )
            hidden = "".join(
                f'<input type="hidden" name="{k}" value="{html.escape(q.get(k) or "")}">'
                for k in ("client_id", "redirect_uri", "state", "nonce", "code_challenge")
            )
            people = "".join(
                f'<li><button name="username" value="{html.escape(u["username"])}">{html.escape(u["name"])}'
                f" ({html.escape(', '.join(u['roles'] + u['departments']))})</button></li>"
                for u in self.users
            )
            return HTMLResponse(
                '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in (development)</title>'
                '<meta name="viewport" content="width=device-width, initial-scale=1">'
                # Targets large enough to touch on a tablet (WCAG 2.2 target size), like the console's own.
                "<style>li{margin:.5rem 0}button{min-height:2.75rem;padding:.5rem 1rem}</style></head><body><main><h1>Development sign-in</h1><p>Choose who you are:</p>"
                f'<form method="post" action="/authorize">{hidden}<ul>{people}</ul></form></main></body></html>'
            )

        @app.post("/authorize")
        async def authorize_post(
            client_id: str = Form(...),
            redirect_uri: str = Form(...),
            state: str = Form(""),
            nonce: str = Form(""),
            code_challenge: str = Form(...),
            username: str = Form(...),
        ):
            client = next((c for c in self.clients if c["client_id"] == client_id), None)
            user = self._user(username)
            if client is None or redirect_uri not in client.get("redirect_uris", []) or user is None:
                return HTMLResponse("<h1>Refused</h1>", status_code=400)
            code = secrets.token_urlsafe(24)
            self._codes[code] = {
                "client_id": client_id,
                "redirect_uri": redirect_uri,
                "nonce": nonce or None,
                "challenge": code_challenge,
                "user": user,
                "until": time.time() + CODE_SECONDS,
            }
            return RedirectResponse(f"{redirect_uri}?{urlencode({'code': code, 'state': state})}", status_code=303)

        @app.post("/token")
        async def token(request: Request):
            form = await request.form()
            client_id, secret = _text(form.get("client_id")), _text(form.get("client_secret"))
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("basic "):
                client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            client = self._client(client_id, secret)
            if client is None:
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            grant = form.get("grant_type")
            if grant == "client_credentials" and client.get("audience"):
                return {
                    "access_token": self.access_token(client),
                    "token_type": "Bearer",
                    "expires_in": self.token_seconds,
                    "scope": client.get("scope", ""),
                }
            if grant != "authorization_code":
                return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
            issued = self._codes.pop(str(form.get("code")), None)
            if (
                issued is None
                or issued["until"] < time.time()
                or issued["client_id"] != client_id
                or issued["redirect_uri"] != form.get("redirect_uri")
                or _s256(str(form.get("code_verifier") or "")) != issued["challenge"]
            ):
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            return {
                "access_token": secrets.token_urlsafe(24),
                "token_type": "Bearer",
                "expires_in": self.token_seconds,
                "id_token": self.id_token(issued["user"], str(client_id), issued["nonce"]),
            }

        return app

    # --- process ------------------------------------------------------------------------------

    def start(self) -> DevOidc:
        sock = socket.create_server((self.host, self.port))
        self.port = sock.getsockname()[1]
        scheme, host = ("https", "localhost") if self.tls else ("http", self.host)  # the certificate's name
        self.issuer = self.issuer or f"{scheme}://{host}:{self.port}"
        config = uvicorn.Config(
            self.app(),
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
            ssl_certfile=self.tls[0] if self.tls else None,
            ssl_keyfile=self.tls[1] if self.tls else None,
        )
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="devoidc", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 5
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(5)

    def __enter__(self) -> DevOidc:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
