"""A thief's opener: every key on every field of every copy a letter left, in every combination that could
yield a link secret and then the letter (docs/architecture.md#threat-model).

Generic on purpose: it knows no event, table or column by name. A copy is anything gathered (an event body,
a database row, a dead letter's headers, a log line); the opener walks it down to its strings, parses JSON
and bytea hex where it finds them, and then:

1. opens every sealed field (``fe1.``/``fe2.`` under every symmetric key, ``rs1.``/``rs2.`` under every
   recipient private key) with every context the code builds: ``<name>|<id>|<party>`` for every event
   type and party of the bus, the services' own names, and every id found in any copy, and
   ``portal-phone|<ref>`` for every patient ref; what opens joins the copies;
2. takes as link secret every run of 43 (or 47, with its check) base64url characters anywhere, and
   every key in each encoding;
3. tries each on every sealed document or details it finds (any record with ``<x>_nonce``,
   ``<x>_ciphertext``, ``key_id`` and ``message_id``), with every key as the server key, and every key bound
   to each period key (named ``period <id>``) as a seal key is to its letter's period;
4. counts as opened any PDF found in clear (``%PDF-`` or its base64) in a copy or in an opened field.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared import crypto, topology

_TOKEN = re.compile(r"\b(?:fe1\.|fe2\.[A-Za-z0-9_-]{1,32}\.|rs1\.|rs2\.[A-Za-z0-9_-]{1,32}\.)[A-Za-z0-9_-]+")
_LINK = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?:[A-Za-z0-9_-]{4})?(?![A-Za-z0-9_-])")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_REF = re.compile(r"\b[A-Za-z0-9_-]{1,32}:[0-9a-f]{64}\b")
_PDF_IN_CLEAR = (b"%PDF-", b"JVBERi0")  # the header, and its base64 as a letter in JSON begins

# The names a sealed field's context starts with, besides the bus's event types: the services' own.
_OWN_CONTEXT_NAMES = ("mailer.recipient",)
_OWN_PARTIES = ("sms", "portal", "print-room")


@dataclass(frozen=True)
class Opened:
    """A letter opened (its message id, None for a PDF found in clear), and how."""

    message_id: str | None
    how: str


def open_letters(
    copies: Iterable[object], keys: Mapping[str, bytes], recipient_keys: Mapping[str, bytes] | None = None
) -> list[Opened]:
    """Every letter these copies open with these keys (name -> raw key): [] when none does."""
    strings: list[str] = []
    records: list[dict] = []
    opened: list[Opened] = []
    for copy in copies:
        _walk(copy, strings, records, opened, "a copy")
    raw_keys = {name: key for name, key in keys.items() if key}
    fields = _open_fields(strings, raw_keys, recipient_keys or {})
    for how, value in fields:
        _walk(value, strings, records, opened, f"a field opened with {how}")
    links = {m.group() for s in strings for m in _LINK.finditer(s)}
    for key in raw_keys.values():
        for encoded in (base64.urlsafe_b64encode(key).rstrip(b"=").decode(), key.hex()[:43]):
            links.add(encoded)
    usable = [link for link in links if _usable_link(link)]
    # A letter's server key may be a seal key bound to its period's key (crypto.bound_to_period): every key
    # bound to each period key held (the key store's keys, named "period <id>") is tried too. (Every key bound
    # to every other would be the square of the keys: minutes on an end-to-end gathering.)
    server_keys = dict(raw_keys)
    for period, period_key in raw_keys.items():
        if period.startswith("period "):
            for name, key in raw_keys.items():
                if name != period:
                    server_keys[f"{name} bound to {period}"] = crypto.bound_to_period(key, period_key)
    for record in records:
        for purpose in ("document", "details"):
            sealed = _sealed(record, purpose)
            if sealed is None:
                continue
            nonce, ciphertext, key_id, message_id = sealed
            for link in usable:
                for name, key in server_keys.items():
                    try:
                        plain = crypto.open_sealed(
                            nonce,
                            ciphertext,
                            link_secret=link,
                            server_key=key,
                            key_id=key_id,
                            message_id=message_id,
                            purpose=purpose,
                        )
                    except crypto.CannotOpen:
                        continue
                    what = "the letter" if plain.startswith(b"%PDF-") else f"the {purpose}"
                    opened.append(Opened(str(message_id), f"{what}, with a link found in the copies and {name}"))
    return opened


def _walk(value: object, strings: list[str], records: list[dict], opened: list[Opened], where: str) -> None:
    if isinstance(value, Mapping):
        records.append(dict(value))
        for item in value.values():
            _walk(item, strings, records, opened, where)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _walk(item, strings, records, opened, where)
    elif isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        if any(mark in raw for mark in _PDF_IN_CLEAR):
            opened.append(Opened(None, f"a PDF in clear in {where}"))
        strings.append(base64.b64encode(raw).decode())
        try:
            _walk(raw.decode(), strings, records, opened, where)
        except UnicodeDecodeError:
            pass
    elif isinstance(value, str):
        if any(mark.decode() in value for mark in _PDF_IN_CLEAR):
            opened.append(Opened(None, f"a PDF in clear in {where}"))
        strings.append(value)
        text = value.strip()
        if text[:1] in ("{", "[") and len(text) > 1:
            try:
                parsed = json.loads(text)
            except ValueError:
                if "\n" in text:  # JSON lines (a log)
                    for line in text.splitlines():
                        if line.strip()[:1] == "{":
                            _walk(line, [], records, opened, where)
                return
            _walk(parsed, strings, records, opened, where)
        elif text.startswith("\\x"):  # bytea as PostgreSQL prints it
            try:
                _walk(binascii.unhexlify(text[2:]), strings, records, opened, where)
            except (binascii.Error, ValueError):
                pass
    elif value is not None:
        strings.append(str(value))


def _contexts(strings: list[str]) -> list[str]:
    ids = {m.group() for s in strings for m in _UUID.finditer(s)}
    names = {key.rsplit(".v", 1)[0] for key in [*topology.BUS, *(k for ks in topology.RETIRED.values() for k in ks)]}
    names |= set(_OWN_CONTEXT_NAMES)
    parties = {p for owner, consumers in topology.BUS.values() for p in (owner, *consumers)}
    parties |= {topology.producer_name(p) for p in parties} | set(_OWN_PARTIES)
    contexts = [crypto.field_context(n, uuid.UUID(i), p) for n in sorted(names) for i in sorted(ids) for p in parties]
    refs = {m.group() for s in strings for m in _REF.finditer(s)}
    return contexts + [f"portal-phone|{ref}" for ref in sorted(refs)]


def _open_fields(
    strings: list[str], keys: Mapping[str, bytes], recipient_keys: Mapping[str, bytes]
) -> Iterator[tuple[str, str]]:
    tokens = {m.group() for s in strings for m in _TOKEN.finditer(s)}
    if not tokens:
        return
    contexts = [c.encode() for c in _contexts(strings)]
    ciphers = {name: AESGCM(key) for name, key in keys.items() if len(key) in (16, 24, 32)}
    for token in sorted(tokens):
        symmetric = token.startswith("fe")
        body = token.split(".")[-1]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (ValueError, binascii.Error):
            continue
        if symmetric:
            yield from _open_symmetric(raw, ciphers, contexts)
        else:
            yield from _open_for_recipient(token, recipient_keys, contexts)


def _open_symmetric(raw: bytes, ciphers: Mapping[str, AESGCM], contexts: list[bytes]) -> Iterator[tuple[str, str]]:
    if len(raw) < 28:
        return
    nonce, ciphertext = raw[:12], raw[12:]
    for name, cipher in ciphers.items():
        for context in contexts:
            try:
                plain = cipher.decrypt(nonce, ciphertext, context)
            except InvalidTag:
                continue
            yield name, plain.decode(errors="replace")
            return


def _open_for_recipient(
    token: str, recipient_keys: Mapping[str, bytes], contexts: list[bytes]
) -> Iterator[tuple[str, str]]:
    kid = token.split(".")[1] if token.startswith("rs2.") else "k1"
    for name, key in recipient_keys.items():
        for context in contexts:
            try:
                plain = crypto.open_for_recipient({kid: key}, token, context=context.decode())
            except crypto.CannotOpen:
                continue
            yield name, plain.decode(errors="replace")
            return


def _usable_link(text: str) -> bool:
    try:
        crypto.derive_key(text, b"\0" * 32, uuid.UUID(int=0), "document")
    except crypto.CannotOpen:
        return False
    return True


def _sealed(record: dict, purpose: str) -> tuple[bytes, bytes, str, uuid.UUID] | None:
    nonce, ciphertext = record.get(f"{purpose}_nonce"), record.get(f"{purpose}_ciphertext")
    key_id, message_id = record.get("key_id"), record.get("message_id")
    if not (nonce and ciphertext and key_id and message_id):
        return None
    try:
        return _bytes(nonce), _bytes(ciphertext), str(key_id), uuid.UUID(str(message_id))
    except (ValueError, binascii.Error):
        return None


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    text = str(value)
    if text.startswith("\\x"):
        return binascii.unhexlify(text[2:])
    return base64.b64decode(text)
