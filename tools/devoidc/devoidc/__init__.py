"""Development OpenID provider: stands in for the hospital's single sign-on (as the dev inbox stands in
for SMTP and SMS) and speaks the real protocol, so the secretariat console runs its production code path.

Discovery, JWKS, authorization code with PKCE (S256 only) and RS256-signed ID tokens for staff; client
credentials with per-client departments for hospital systems using the secretariat's API, and for the
systems (and the integrators' sandbox) sending FHIR to the hospital gateway. Users and clients are
configurable (``DEVOIDC_USERS``, ``DEVOIDC_CLIENTS``: JSON); never use it outside development.
"""

from devoidc.provider import DEFAULT_CLIENTS, DEFAULT_USERS, DevOidc

__all__ = ["DEFAULT_CLIENTS", "DEFAULT_USERS", "DevOidc"]
