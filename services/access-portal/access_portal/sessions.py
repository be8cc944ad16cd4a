"""Sessions opened by a right code: a random cookie, stored only as a keyed hash, with idle and
absolute limits."""

from __future__ import annotations

import secrets
import uuid

from fastapi import Request
from fastapi.responses import Response

from access_portal import store
from access_portal.settings import PortalSettings
from shared import crypto


class Sessions:
    def __init__(self, settings: PortalSettings) -> None:
        self.settings = settings
        prefix = "__Host-" if settings.cookie_secure else ""
        self.cookie_name = f"{prefix}session"

    def hash(self, token: str) -> str:
        return crypto.keyed_hash(self.settings.portal_secret_key, "session", token)

    def set_cookie(self, response: Response, name: str, value: str, max_age: int | None = None) -> None:
        response.set_cookie(
            name, value, max_age=max_age, path="/", secure=self.settings.cookie_secure, httponly=True, samesite="strict"
        )

    async def open(self, conn, message_id: uuid.UUID) -> str:
        """A new session for this message; returns the cookie value (256 bits, fresh at authentication)."""
        token = secrets.token_urlsafe(32)
        await store.insert_session(conn, self.hash(token), message_id)
        return token

    def start(self, response: Response, token: str) -> None:
        self.set_cookie(response, self.cookie_name, token, max_age=self.settings.session_absolute_seconds)

    def token(self, request: Request) -> str | None:
        """This browser's session cookie, if it sent one."""
        return request.cookies.get(self.cookie_name) or None

    async def current(self, conn, token: str | None, message_id: uuid.UUID) -> str | None:
        """The hash of this browser's live session on the message (touched), or None."""
        if not token:
            return None
        # Looked up under every PORTAL_SECRET_KEY key: a session opened before a rotation lives on.
        hashes = crypto.keyed_hashes(self.settings.portal_secret_key, "session", token)
        return await store.touch_session(
            conn, hashes, message_id, self.settings.session_idle_seconds, self.settings.session_absolute_seconds
        )

    async def end(self, conn, token: str | None) -> None:
        if token:
            await store.end_session(conn, self.hash(token))

    def forget(self, response: Response) -> None:
        """The browser's session cookie removed."""
        response.delete_cookie(
            self.cookie_name, path="/", secure=self.settings.cookie_secure, httponly=True, samesite="strict"
        )
