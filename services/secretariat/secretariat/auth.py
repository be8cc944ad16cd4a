"""Who is asking: staff through the hospital's OpenID provider (authorization code with PKCE, Authlib's
client), hospital systems through OAuth2 client-credentials access tokens; both verified against the
provider's published keys (shared/oauth.py: RS256 only, issuer, audience, expiry; nonce here)."""

from __future__ import annotations

import secrets
import warnings
from dataclasses import dataclass

from authlib.deprecate import AuthlibDeprecationWarning

with warnings.catch_warnings():  # Authlib prefers httpx2 but supports httpx, which the project pins
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client

from secretariat.settings import SecretariatSettings
from shared.oauth import TokenVerifier, Unauthenticated, strings

__all__ = ["Identity", "Oidc", "Unauthenticated", "staff_identity"]


@dataclass(frozen=True)
class Identity:
    subject: str
    name: str
    via: str  # "console" or "api"
    departments: frozenset[str] | None  # None: every department (supervisor)
    can_act: bool
    can_audit: bool
    can_read: bool = True  # search and view convocations
    knows_patients: bool = False  # sees who the patient is, on letters of its own departments
    can_count: bool = False  # the department figures
    session_hash: str | None = None  # the staff session the audit names (secretariat_audit.staff_session)

    def sees(self, department: str | None) -> bool:
        return self.departments is None or (department is not None and department in self.departments)

    def knows_patient_of(self, department: str | None) -> bool:
        """The patient's name, birth date and place: to the letter's own department only (never to a
        supervisor reading every department)."""
        return self.knows_patients and self.departments is not None and department in self.departments

    def scope(self) -> list[str] | None:
        return None if self.departments is None else sorted(self.departments)


ROLES = ("secretary", "manager", "supervisor")


def staff_identity(
    subject: str, name: str, roles: list[str], departments: list[str], session_hash: str | None = None
) -> Identity | None:
    """A secretary acts within her departments and knows their patients; a manager sees the figures of his
    departments; a supervisor reads every department (not who the patients are) and the staff audit."""
    if "supervisor" in roles:
        return Identity(
            subject, name, "console", None, can_act=False, can_audit=True, can_count=True, session_hash=session_hash
        )
    if "secretary" in roles and departments:
        return Identity(
            subject,
            name,
            "console",
            frozenset(departments),
            can_act=True,
            can_audit=False,
            knows_patients=True,
            can_count=True,
            session_hash=session_hash,
        )
    if "manager" in roles and departments:
        return Identity(
            subject,
            name,
            "console",
            frozenset(departments),
            can_act=False,
            can_audit=False,
            can_read=False,
            can_count=True,
            session_hash=session_hash,
        )
    return None


class Oidc:
    def __init__(self, settings: SecretariatSettings) -> None:
        self.s = settings
        self.tokens = TokenVerifier(settings.oidc_issuer, refresh_seconds=settings.jwks_refresh_seconds)

    @property
    def redirect_uri(self) -> str:
        return self.s.public_base_url.rstrip("/") + "/auth/callback"

    async def metadata(self) -> dict:
        return await self.tokens.metadata()

    def _client(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.s.oidc_client_id,
            client_secret=self.s.oidc_client_secret,
            scope=self.s.oidc_scope,
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            timeout=10,
        )

    async def authorization_url(self) -> tuple[str, dict]:
        """Where to send the browser, and what the callback must find again (state, PKCE verifier, nonce)."""
        meta = await self.metadata()
        pending = {
            "state": secrets.token_urlsafe(24),
            "verifier": secrets.token_urlsafe(48),
            "nonce": secrets.token_urlsafe(24),
        }
        async with self._client() as client:
            url, _ = client.create_authorization_url(
                meta["authorization_endpoint"],
                state=pending["state"],
                code_verifier=pending["verifier"],
                nonce=pending["nonce"],
            )
        return url, pending

    async def sign_in(self, code: str, pending: dict) -> dict:
        """Exchange the code (with the PKCE verifier) and return the verified ID token's claims."""
        meta = await self.metadata()
        async with self._client() as client:
            try:
                token = await client.fetch_token(meta["token_endpoint"], code=code, code_verifier=pending["verifier"])
            except Exception as exc:  # the provider refused the code: a sign-in failure, not a crash
                raise Unauthenticated(f"token endpoint refused the code: {type(exc).__name__}") from None
        if "id_token" not in token:
            raise Unauthenticated("no ID token")
        claims = await self.verify(token["id_token"], audience=self.s.oidc_client_id)
        if not secrets.compare_digest(str(claims.get("nonce", "")), pending["nonce"]):
            raise Unauthenticated("nonce mismatch")
        return claims

    async def verify(self, token: str, *, audience: str) -> dict:
        return await self.tokens.verify(token, audience=audience)

    def staff(self, claims: dict) -> Identity | None:
        return staff_identity(
            str(claims["sub"]),
            str(claims.get(self.s.oidc_name_claim) or claims["sub"]),
            strings(claims.get(self.s.oidc_roles_claim, [])),
            strings(claims.get(self.s.oidc_departments_claim, [])),
        )

    def roles(self, claims: dict) -> list[str]:
        return [r for r in strings(claims.get(self.s.oidc_roles_claim, [])) if r in ROLES]

    async def api_client(self, bearer: str) -> Identity:
        """A hospital system: its access token's departments bound what it sees; scopes what it may do."""
        claims = await self.tokens.client(bearer, audience=self.s.api_audience, scope="convocations.read")
        scopes = set(str(claims.get("scope", "")).split())
        departments = strings(claims.get(self.s.oidc_departments_claim, []))
        if not departments:
            raise Unauthenticated("token lacks a department")
        # The hospital's own systems, scoped to their departments, know their patients.
        return Identity(
            str(claims["sub"]),
            str(claims.get("client_id") or claims["sub"]),
            "api",
            frozenset(departments),
            can_act="convocations.act" in scopes,
            can_audit=False,
            knows_patients=True,
            can_count=True,
        )
