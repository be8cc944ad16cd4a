"""The "generic JSON" SMS provider: request model and callback signature."""

from __future__ import annotations

import hashlib
import hmac

from pydantic import BaseModel, ConfigDict, Field


class GenericMessage(BaseModel):
    """Body of ``POST /generic/v1/messages``. Unknown fields are refused to catch client typos."""

    model_config = ConfigDict(extra="forbid")
    to: str = Field(pattern=r"^\+[1-9]\d{6,14}$")
    text: str = Field(min_length=1, max_length=1600)
    reference: str = Field(min_length=1, max_length=200)
    callback_url: str | None = Field(None, pattern=r"^https?://\S+$")


def generic_signature(token: str, body: bytes) -> str:
    """``X-Signature`` of a callback: "sha256=" + hex HMAC-SHA256 of the raw body, keyed with the token."""
    return "sha256=" + hmac.new(token.encode(), body, hashlib.sha256).hexdigest()
