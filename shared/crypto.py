"""Crypto primitives used by several services: document sealing, bus field encryption, keyed hashes.

Document key = HKDF-SHA256(ikm = link secret, salt = server key, info = purpose + message id):
without the link secret, which only the e-mailed link carries, no key and no database opens a
document (docs/architecture.md#security). The server key is a seal key (SEAL_KEYS) bound to the
period key of the letter's expiry (the key store's, destroyed once every letter of its period has
expired): ``key_id`` ``k1.w2026-51`` names both, and without the period key nothing opens again. Fields on the bus that carry a secret are AES-256-GCM encrypted for their
one consumer with a key only producer and consumer hold.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import uuid
from typing import TypeAlias

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

LINK_SECRET_BYTES = 32
LINK_SECRET_CHARS = 43  # 32 bytes in unpadded base64url
LINK_CHECK_CHARS = 4  # CRC-24 in base64url


class CannotOpen(Exception):
    """The ciphertext does not open with these keys (wrong link, wrong key, or tampered)."""


def b64e(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def b64d(text: str) -> bytes:
    return base64.b64decode(text)


def new_link_secret() -> str:
    """A fresh per-message secret (256 bits), URL-safe, carried only by the link."""
    return base64.urlsafe_b64encode(secrets.token_bytes(LINK_SECRET_BYTES)).rstrip(b"=").decode()


def _crc24(data: bytes) -> int:
    """CRC-24 as OpenPGP computes it (RFC 4880, section 6.1): "123456789" gives 0x21CF02."""
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def link_check(link_secret: str) -> str:
    """Four characters that let the portal's page tell a damaged link before anything is sent: the
    CRC-24 of the secret's text, which changes with any one changed character and any two swapped
    neighbours (a burst of at most 24 bits). Derived from the secret and public in the link with it,
    it adds nothing to guess; the server never receives the fragment it rides in."""
    return base64.urlsafe_b64encode(_crc24(link_secret.encode()).to_bytes(3, "big")).decode()


def link_fragment(link_secret: str) -> str:
    """What the e-mailed link carries after its '#': the secret, then its check."""
    return link_secret + link_check(link_secret)


def secret_of_fragment(fragment: str) -> str:
    """The link secret that a link's fragment carries (the same check as static/portal.js in the
    portal). Links e-mailed before the check carry the secret alone and are taken as they are.
    A fragment with the secret's length plus the check's but a check that does not match: CannotOpen."""
    if len(fragment) != LINK_SECRET_CHARS + LINK_CHECK_CHARS:
        return fragment
    secret, check = fragment[:LINK_SECRET_CHARS], fragment[LINK_SECRET_CHARS:]
    if not hmac.compare_digest(link_check(secret).encode(), check.encode()):
        raise CannotOpen("damaged link")
    return secret


def _link_secret_bytes(link_secret: str) -> bytes:
    link_secret = secret_of_fragment(link_secret)
    try:
        raw = base64.urlsafe_b64decode(link_secret + "=" * (-len(link_secret) % 4))
    except (ValueError, TypeError):
        raise CannotOpen("malformed link secret") from None
    if len(raw) != LINK_SECRET_BYTES:
        raise CannotOpen("malformed link secret")
    return raw


def derive_key(link_secret: str, server_key: bytes, message_id: uuid.UUID, purpose: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=server_key,
        info=f"convocations/v1/{purpose}/".encode() + message_id.bytes,
    ).derive(_link_secret_bytes(link_secret))


def seal(
    plaintext: bytes, *, link_secret: str, server_key: bytes, key_id: str, message_id: uuid.UUID, purpose: str
) -> tuple[bytes, bytes]:
    """Encrypt under the key derived from link secret + server key. Returns (nonce, ciphertext)."""
    nonce = os.urandom(12)
    key = derive_key(link_secret, server_key, message_id, purpose)
    aad = f"{message_id}|{key_id}|{purpose}".encode()
    return nonce, AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(
    nonce: bytes,
    ciphertext: bytes,
    *,
    link_secret: str,
    server_key: bytes,
    key_id: str,
    message_id: uuid.UUID,
    purpose: str,
) -> bytes:
    key = derive_key(link_secret, server_key, message_id, purpose)
    aad = f"{message_id}|{key_id}|{purpose}".encode()
    return _decrypt(key, nonce, ciphertext, aad, "document does not open with this link")


def _decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes, why: str) -> bytes:
    """AES-GCM decryption where anything malformed or tampered is one error: CannotOpen."""
    if len(nonce) != 12 or len(ciphertext) < 16:
        raise CannotOpen(why)
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        raise CannotOpen(why) from None


def period_key_id(seal_key_id: str, period_id: str) -> str:
    """The ``key_id`` of a letter sealed under a seal key and a period key: ``<seal key id>.<period id>``."""
    return f"{seal_key_id}.{period_id}"


def split_key_id(key_id: str) -> tuple[str, str | None]:
    """(seal key id, period id) of a ``key_id``; letters sealed before period keys name no period."""
    seal_key_id, _, period_id = key_id.partition(".")
    return seal_key_id, period_id or None


def bound_to_period(seal_key: bytes, period_key: bytes) -> bytes:
    """The server key of a letter sealed under a period: the seal key and the period key, both needed.
    Once the period key is destroyed, no seal key, no other period key and no link rebuild it."""
    return hmac.new(seal_key, b"convocations/v1/period/" + period_key, hashlib.sha256).digest()


class KeyRing(dict):
    """Keys by id, oldest first; the last one is current. Every key rotates this one way: new data
    is sealed or hashed under the current key and carries its id; what was made under an older key
    still opens and verifies while that key stays in the ring (deploy/README.md, "Rotating keys")."""

    @classmethod
    def of(cls, keys: KeyRing | dict[str, bytes] | bytes) -> KeyRing:
        """A ring as the settings give it, or a ring of one bare key (whose id is then ``k1``)."""
        if isinstance(keys, cls):
            return keys
        return cls(keys if isinstance(keys, dict) else {"k1": keys})

    @property
    def current_id(self) -> str:
        return next(reversed(self))

    @property
    def current(self) -> bytes:
        return self[self.current_id]

    def key(self, kid: str) -> bytes:
        try:
            return self[kid]
        except KeyError:
            raise CannotOpen("made under a key that is no longer in the ring") from None


Keys: TypeAlias = "KeyRing | dict[str, bytes] | bytes"


def _kid_and_body(token: str, prefix: str, legacy: str) -> tuple[str | None, str]:
    """``<prefix><kid>.<body>`` -> (kid, body); a ``<legacy>`` token from before key ids -> (None, body)."""
    if token.startswith(prefix):
        kid, sep, body = token[len(prefix) :].partition(".")
        if sep and kid:
            return kid, body
    elif token.startswith(legacy):
        return None, token[len(legacy) :]
    raise CannotOpen("unknown encoding")


def _candidates(ring: KeyRing, kid: str | None) -> list[bytes]:
    # A token from before key ids names no key: any key of the ring may have made it.
    return [ring.key(kid)] if kid is not None else list(ring.values())


def seal_field(keys: Keys, value: dict, *, context: str) -> str:
    """Encrypt a small JSON value for one consumer under the ring's current key; ``context`` (e.g.
    event type + id) is bound as AAD. ``fe2.<key id>.<base64url(nonce + ciphertext)>``."""
    ring = KeyRing.of(keys)
    nonce = os.urandom(12)
    ct = AESGCM(ring.current).encrypt(nonce, json.dumps(value, separators=(",", ":")).encode(), context.encode())
    return f"fe2.{ring.current_id}." + base64.urlsafe_b64encode(nonce + ct).rstrip(b"=").decode()


def open_field(keys: Keys, token: str, *, context: str) -> dict:
    kid, body = _kid_and_body(token, "fe2.", "fe1.")
    raw = _token_bytes(body)
    for n, key in enumerate(candidates := _candidates(KeyRing.of(keys), kid), 1):
        try:
            plain = _decrypt(key, raw[:12], raw[12:], context.encode(), "field does not open with this key")
            break
        except CannotOpen:
            if n == len(candidates):
                raise
    try:
        return json.loads(plain)
    except ValueError:
        raise CannotOpen("field is not JSON") from None


def _token_bytes(body: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (ValueError, TypeError):
        raise CannotOpen("malformed token") from None


def _hmac(key: bytes, purpose: str, value: str) -> str:
    subkey = hmac.new(key, f"convocations/v1/{purpose}".encode(), hashlib.sha256).digest()
    return hmac.new(subkey, value.encode(), hashlib.sha256).hexdigest()


def keyed_hash(keys: Keys, purpose: str, value: str) -> str:
    """HMAC-SHA256 under a purpose-specific subkey of the current key, as ``<key id>:<hex>``: equal
    inputs compare equal under one key, nothing reverses it."""
    ring = KeyRing.of(keys)
    return f"{ring.current_id}:{_hmac(ring.current, purpose, value)}"


def keyed_hashes(keys: Keys, purpose: str, value: str) -> list[str]:
    """The value's hash under every key of the ring: what a lookup of stored hashes must match."""
    return [f"{kid}:{_hmac(key, purpose, value)}" for kid, key in KeyRing.of(keys).items()]


def hash_matches(keys: Keys, purpose: str, value: str, stored: str | None) -> bool:
    """Whether ``stored`` is the hash of ``value`` under the key it names (constant time)."""
    kid, sep, _ = (stored or "").partition(":")
    key = KeyRing.of(keys).get(kid) if sep else None
    return key is not None and stored is not None and hmac.compare_digest(f"{kid}:{_hmac(key, purpose, value)}", stored)


def field_context(event_type: str, ident: uuid.UUID, consumer: str) -> str:
    """AAD binding an encrypted bus field to its event, its id and its one consumer."""
    return f"{event_type}|{ident}|{consumer}"


# --- sealing for a recipient outside the system (the hospital's print room) -----------------------
# X25519 + HKDF-SHA256 + AES-256-GCM to the recipient's public key: the sender keeps no key that
# opens it, so "all databases plus all server keys" still open nothing (docs/architecture.md#security).


def recipient_public_key(private_key: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return X25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _recipient_key(shared_secret: bytes, ephemeral_public: bytes, recipient_public: bytes, context: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=ephemeral_public + recipient_public,
        info=f"convocations/v1/recipient/{context}".encode(),
    ).derive(shared_secret)


def seal_for_recipient(recipient_publics: Keys, plaintext: bytes, *, context: str) -> str:
    """Seal to the current public key of the recipient's ring: ``rs2.<key id>.<base64url(...)>``."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    ring = KeyRing.of(recipient_publics)
    recipient_public = ring.current
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key = _recipient_key(
        ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_public)),
        ephemeral_public,
        recipient_public,
        context,
    )
    nonce = os.urandom(12)
    ct = AESGCM(key).encrypt(nonce, plaintext, context.encode())
    return f"rs2.{ring.current_id}." + base64.urlsafe_b64encode(ephemeral_public + nonce + ct).rstrip(b"=").decode()


def open_for_recipient(private_keys: Keys, token: str, *, context: str) -> bytes:
    """Open with the recipient's private key ring (the key the token names; any, for ``rs1.``)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    kid, body = _kid_and_body(token, "rs2.", "rs1.")
    raw = _token_bytes(body)
    ephemeral_public, nonce, ct = raw[:32], raw[32:44], raw[44:]
    if len(ephemeral_public) != 32:
        raise CannotOpen("malformed token")
    candidates = _candidates(KeyRing.of(private_keys), kid)
    for n, private_key in enumerate(candidates, 1):
        me = X25519PrivateKey.from_private_bytes(private_key)
        try:
            shared = me.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
        except ValueError:  # a low-order point: not something we sealed
            raise CannotOpen("malformed token") from None
        key = _recipient_key(shared, ephemeral_public, recipient_public_key(private_key), context)
        try:
            return _decrypt(key, nonce, ct, context.encode(), "does not open with this key")
        except CannotOpen:
            if n == len(candidates):
                raise
    raise CannotOpen("does not open with this key")
