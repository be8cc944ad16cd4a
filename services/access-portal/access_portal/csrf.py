"""Double-submit CSRF tokens: a random cookie and a form token derived from it, no server state.

The token is bound to the browser's random cookie, to the message and to the session cookie as sent:
a token minted on another letter, or before a login, is refused.
"""

from __future__ import annotations

import secrets

from fastapi import Request

from shared import crypto


class Csrf:
    def __init__(self, secret_key, cookie_name: str, session_cookie_name: str) -> None:
        self._key, self.cookie_name, self._session_cookie = secret_key, cookie_name, session_cookie_name

    def _binding(self, cookie: str, request: Request, message_id) -> str:
        session = request.cookies.get(self._session_cookie, "")
        return f"{cookie}|{message_id or ''}|{session}"

    def token(self, request: Request, message_id) -> tuple[str, str]:
        """(cookie value, form token) for this message's forms; the cookie is reused when present."""
        cookie = request.cookies.get(self.cookie_name) or secrets.token_urlsafe(24)
        return cookie, crypto.keyed_hash(self._key, "csrf", self._binding(cookie, request, message_id))

    def ok(self, request: Request, token: str, message_id) -> bool:
        cookie = request.cookies.get(self.cookie_name)
        if not cookie or not token:
            return False
        # Under the key the token names: a form served just before a key rotation still posts.
        return crypto.hash_matches(self._key, "csrf", self._binding(cookie, request, message_id), token)
