"""shared/crypto.py: what opens what. A document opens only with its link secret and its server key;
a bus field only with its key, in its event and for its consumer; a print-room copy only with the
print room's private key. Anything else is :class:`CannotOpen`, never a wrong plaintext."""

from __future__ import annotations

import base64
import json
import secrets
import uuid

import pytest

from shared import crypto
from shared.crypto import CannotOpen


def key() -> bytes:
    return secrets.token_bytes(32)


def flip(raw: bytes, index: int) -> bytes:
    out = bytearray(raw)
    out[index] ^= 0x01
    return bytes(out)


def url_b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Sealed:
    """One sealed document and everything needed to open it."""

    def __init__(self, plaintext: bytes = b"%PDF-1.4 the letter", purpose: str = "document") -> None:
        self.plaintext, self.purpose = plaintext, purpose
        self.link_secret, self.server_key, self.key_id, self.message_id = (
            crypto.new_link_secret(),
            key(),
            "k1",
            uuid.uuid4(),
        )
        self.nonce, self.ciphertext = crypto.seal(plaintext, **self.context())

    def context(self, **overrides) -> dict:
        return dict(
            dict(
                link_secret=self.link_secret,
                server_key=self.server_key,
                key_id=self.key_id,
                message_id=self.message_id,
                purpose=self.purpose,
            ),
            **overrides,
        )

    def open(self, nonce: bytes | None = None, ciphertext: bytes | None = None, **overrides) -> bytes:
        return crypto.open_sealed(
            self.nonce if nonce is None else nonce,
            self.ciphertext if ciphertext is None else ciphertext,
            **self.context(**overrides),
        )


# --- documents ------------------------------------------------------------------------------------


def test_a_sealed_document_opens_with_its_link_secret_and_server_key():
    sealed = Sealed()
    assert sealed.open() == sealed.plaintext
    assert sealed.plaintext not in sealed.ciphertext


def test_sealing_the_same_document_twice_never_repeats_a_nonce_or_ciphertext():
    sealed = Sealed()
    again = crypto.seal(sealed.plaintext, **sealed.context())
    assert again[0] != sealed.nonce and again[1] != sealed.ciphertext


def test_a_wrong_link_secret_does_not_open():
    with pytest.raises(CannotOpen):
        Sealed().open(link_secret=crypto.new_link_secret())


@pytest.mark.parametrize(
    "link_secret",
    [
        pytest.param("", id="empty"),
        pytest.param("abc", id="too-short"),
        pytest.param(url_b64(secrets.token_bytes(31)), id="31-bytes"),
        pytest.param(url_b64(secrets.token_bytes(33)), id="33-bytes"),
        pytest.param("é" * 43, id="not-ascii"),
        pytest.param("!" * 43, id="not-base64"),
    ],
)
def test_a_malformed_link_secret_does_not_open(link_secret):
    with pytest.raises(CannotOpen):
        Sealed().open(link_secret=link_secret)


def test_a_wrong_server_key_does_not_open():
    with pytest.raises(CannotOpen):
        Sealed().open(server_key=key())


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda s: s.open(ciphertext=flip(s.ciphertext, 0)), id="ciphertext-bit"),
        pytest.param(lambda s: s.open(ciphertext=flip(s.ciphertext, len(s.ciphertext) - 1)), id="tag-bit"),
        pytest.param(lambda s: s.open(ciphertext=s.ciphertext[:-16]), id="tag-removed"),
        pytest.param(lambda s: s.open(ciphertext=s.ciphertext + b"\x00"), id="byte-appended"),
        pytest.param(lambda s: s.open(nonce=flip(s.nonce, 5)), id="nonce-bit"),
        pytest.param(lambda s: s.open(key_id="k2"), id="key-id-swapped"),
        pytest.param(lambda s: s.open(message_id=uuid.uuid4()), id="message-id-swapped"),
        pytest.param(lambda s: s.open(purpose="details"), id="purpose-swapped"),
    ],
)
def test_tampering_with_ciphertext_nonce_or_bound_data_does_not_open(tamper):
    with pytest.raises(CannotOpen):
        tamper(Sealed())


def test_a_document_moved_to_another_message_does_not_open_there():
    a, b = Sealed(), Sealed()
    with pytest.raises(CannotOpen):
        crypto.open_sealed(a.nonce, a.ciphertext, **b.context())


def test_a_nonce_of_the_wrong_length_does_not_open():
    sealed = Sealed()
    with pytest.raises(CannotOpen):
        sealed.open(nonce=sealed.nonce[:4])


def test_the_document_key_depends_on_link_secret_server_key_message_and_purpose():
    link, server, message = crypto.new_link_secret(), key(), uuid.uuid4()
    keys = {
        crypto.derive_key(link, server, message, "document"),
        crypto.derive_key(crypto.new_link_secret(), server, message, "document"),
        crypto.derive_key(link, key(), message, "document"),
        crypto.derive_key(link, server, uuid.uuid4(), "document"),
        crypto.derive_key(link, server, message, "details"),
    }
    assert len(keys) == 5
    assert crypto.derive_key(link, server, message, "document") == crypto.derive_key(link, server, message, "document")


def test_link_secrets_are_256_bit_url_safe_and_never_repeat():
    made = {crypto.new_link_secret() for _ in range(100)}
    assert len(made) == 100
    for link in made:
        assert len(link) == 43 and set(link) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        assert len(base64.urlsafe_b64decode(link + "=")) == 32


# The same vectors are checked against the portal's JavaScript (tests/browser/test_portal_browser.py).
LINK_VECTOR_SECRET = "q6kZ0m3T0aGfXAzyQhPLnWp6hBr5JmUeZ4eB3VvCc9g"
LINK_VECTOR_FRAGMENT = LINK_VECTOR_SECRET + "_Ow0"
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def test_the_links_check_is_the_openpgp_crc24_of_the_secret_in_base64url():
    assert crypto._crc24(b"123456789") == 0x21CF02  # the standard check value
    assert crypto.link_fragment(LINK_VECTOR_SECRET) == LINK_VECTOR_FRAGMENT
    assert crypto.secret_of_fragment(LINK_VECTOR_FRAGMENT) == LINK_VECTOR_SECRET


def test_every_changed_character_and_every_swap_of_neighbours_in_a_checked_link_is_caught():
    for _ in range(5):
        fragment = crypto.link_fragment(crypto.new_link_secret())
        damaged = {fragment[:i] + c + fragment[i + 1 :] for i in range(len(fragment)) for c in B64URL}
        damaged |= {fragment[:i] + fragment[i + 1] + fragment[i] + fragment[i + 2 :] for i in range(len(fragment) - 1)}
        damaged.discard(fragment)
        assert len(damaged) > 46 * 63
        for bad in damaged:
            with pytest.raises(CannotOpen):
                crypto.secret_of_fragment(bad)


def test_a_checked_link_and_a_link_sent_before_the_check_both_open_and_a_damaged_check_does_not():
    sealed = Sealed()
    assert sealed.open(link_secret=crypto.link_fragment(sealed.link_secret)) == sealed.plaintext
    assert sealed.open(link_secret=sealed.link_secret) == sealed.plaintext  # the old links, until they expire
    fragment = crypto.link_fragment(sealed.link_secret)
    with pytest.raises(CannotOpen):
        sealed.open(link_secret=fragment[:-1] + ("A" if fragment[-1] != "A" else "B"))


# --- bus fields -----------------------------------------------------------------------------------

MESSAGE_ID = uuid.UUID("0b3f4c1e-2d5a-4e6f-8a7b-9c0d1e2f3a4b")
FOR_MAILER = crypto.field_context("message.sealed", MESSAGE_ID, "mailer")


def test_a_field_opens_with_its_key_in_its_context():
    k = key()
    token = crypto.seal_field(k, {"email": "marie@example.ch", "link_secret": "s3cret"}, context=FOR_MAILER)
    assert token.startswith("fe2.k1.")
    assert crypto.open_field(k, token, context=FOR_MAILER) == {"email": "marie@example.ch", "link_secret": "s3cret"}
    assert "marie" not in token and "s3cret" not in token


def test_the_same_field_sealed_twice_looks_different():
    k = key()
    assert crypto.seal_field(k, {"v": 1}, context=FOR_MAILER) != crypto.seal_field(k, {"v": 1}, context=FOR_MAILER)


@pytest.mark.parametrize(
    "elsewhere",
    [
        pytest.param(crypto.field_context("message.sealed", uuid.uuid4(), "mailer"), id="another-message"),
        pytest.param(crypto.field_context("message.sealed", MESSAGE_ID, "portal"), id="another-consumer"),
        pytest.param(crypto.field_context("otp.requested", MESSAGE_ID, "mailer"), id="another-event"),
        pytest.param("", id="no-context"),
    ],
)
def test_a_field_moved_to_another_message_consumer_or_event_does_not_open(elsewhere):
    k = key()
    token = crypto.seal_field(k, {"link_secret": "s3cret"}, context=FOR_MAILER)
    with pytest.raises(CannotOpen):
        crypto.open_field(k, token, context=elsewhere)


def test_a_field_does_not_open_with_another_consumers_key():
    token = crypto.seal_field(key(), {"mobile": "+41791234567"}, context=FOR_MAILER)
    with pytest.raises(CannotOpen):
        crypto.open_field(key(), token, context=FOR_MAILER)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda t: t[:20] + ("A" if t[20] != "A" else "B") + t[21:], id="nonce-char"),
        pytest.param(lambda t: t[:-5] + ("A" if t[-5] != "A" else "B") + t[-4:], id="tag-char"),
        pytest.param(lambda t: "fe3." + t[4:], id="unknown-version"),
        pytest.param(lambda t: "fe2.k9." + t[7:], id="unknown-key-id"),
        pytest.param(lambda t: t[4:], id="no-prefix"),
    ],
)
def test_a_tampered_field_does_not_open(tamper):
    k = key()
    token = crypto.seal_field(k, {"code": "123456"}, context=FOR_MAILER)
    with pytest.raises(CannotOpen):
        crypto.open_field(k, tamper(token), context=FOR_MAILER)


def test_a_truncated_field_does_not_open():
    with pytest.raises(CannotOpen):
        crypto.open_field(key(), "fe1.AAAA", context=FOR_MAILER)  # matches the contracts' fe1 pattern


# --- keyed hashes ---------------------------------------------------------------------------------


def test_keyed_hash_is_deterministic_per_purpose_and_differs_across_purposes_and_keys():
    k = key()
    phone = crypto.keyed_hash(k, "phone", "+41791234567")
    assert phone == crypto.keyed_hash(k, "phone", "+41791234567")
    assert phone != crypto.keyed_hash(k, "patient", "+41791234567")
    assert phone != crypto.keyed_hash(k, "phone", "+41791234568")
    assert phone != crypto.keyed_hash(key(), "phone", "+41791234567")
    kid, _, digest = phone.partition(":")
    assert kid == "k1" and len(digest) == 64 and int(digest, 16) >= 0
    assert "41791234567" not in phone


def test_keyed_hash_purposes_do_not_collide_by_concatenation():
    k = key()
    assert crypto.keyed_hash(k, "phone", "x") != crypto.keyed_hash(k, "phon", "ex")


# --- the print room -------------------------------------------------------------------------------

PRINT_CONTEXT = f"postal.requested|{MESSAGE_ID}|print-room"


def print_room_keys() -> tuple[bytes, bytes]:
    private = key()
    return private, crypto.recipient_public_key(private)


def test_a_print_room_copy_opens_with_the_print_rooms_private_key():
    private, public = print_room_keys()
    token = crypto.seal_for_recipient(public, b'{"patient_id": "P-1"}', context=PRINT_CONTEXT)
    assert token.startswith("rs2.k1.") and "P-1" not in token
    assert crypto.open_for_recipient(private, token, context=PRINT_CONTEXT) == b'{"patient_id": "P-1"}'


@pytest.mark.parametrize(
    "attempt",
    [
        pytest.param(
            lambda private, public, token: crypto.open_for_recipient(key(), token, context=PRINT_CONTEXT),
            id="another-private-key",
        ),
        pytest.param(
            lambda private, public, token: crypto.open_for_recipient(public, token, context=PRINT_CONTEXT),
            id="the-public-key-the-sender-holds",
        ),
        pytest.param(
            lambda private, public, token: crypto.open_for_recipient(
                private, token, context=f"postal.requested|{uuid.uuid4()}|print-room"
            ),
            id="another-convocation",
        ),
        pytest.param(
            lambda private, public, token: crypto.open_for_recipient(
                private, token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:], context=PRINT_CONTEXT
            ),
            id="tampered",
        ),
        pytest.param(
            lambda private, public, token: crypto.open_for_recipient(
                private, "fe1." + token[4:], context=PRINT_CONTEXT
            ),
            id="wrong-prefix",
        ),
    ],
)
def test_a_print_room_copy_opens_with_nothing_else(attempt):
    private, public = print_room_keys()
    token = crypto.seal_for_recipient(public, json.dumps({"patient_id": "P-1"}).encode(), context=PRINT_CONTEXT)
    with pytest.raises(CannotOpen):
        attempt(private, public, token)


def test_a_truncated_print_room_copy_does_not_open():
    private, _ = print_room_keys()
    with pytest.raises(CannotOpen):
        crypto.open_for_recipient(private, "rs1.AAAA", context=PRINT_CONTEXT)


# --- key rings: every key rotates the same way ------------------------------------------------------


def test_a_field_sealed_under_the_old_key_opens_after_rotation_and_new_ones_use_the_new_key():
    k1, k2 = key(), key()
    old = crypto.seal_field({"k1": k1}, {"phone": "+41791234567"}, context=FOR_MAILER)
    legacy = "fe1." + old.split(".", 2)[2]  # sealed before key ids existed
    rotated = crypto.KeyRing({"k1": k1, "k2": k2})
    new = crypto.seal_field(rotated, {"phone": "+41791234567"}, context=FOR_MAILER)
    assert new.startswith("fe2.k2.")
    for token in (old, legacy, new):
        assert crypto.open_field(rotated, token, context=FOR_MAILER) == {"phone": "+41791234567"}
    drained = crypto.KeyRing({"k2": k2})
    assert crypto.open_field(drained, new, context=FOR_MAILER) == {"phone": "+41791234567"}
    for token in (old, legacy):
        with pytest.raises(CannotOpen):
            crypto.open_field(drained, token, context=FOR_MAILER)


def test_a_keyed_hash_made_under_the_old_key_still_verifies_and_is_found_after_rotation():
    k1, k2 = key(), key()
    stored = crypto.keyed_hash({"k1": k1}, "otp", "challenge:123456")
    rotated = {"k1": k1, "k2": k2}
    assert crypto.keyed_hash(rotated, "otp", "challenge:123456").startswith("k2:")
    assert crypto.hash_matches(rotated, "otp", "challenge:123456", stored)
    assert not crypto.hash_matches(rotated, "otp", "challenge:654321", stored)
    assert stored in crypto.keyed_hashes(rotated, "otp", "challenge:123456")
    assert not crypto.hash_matches({"k2": k2}, "otp", "challenge:123456", stored)  # its key removed
    assert not crypto.hash_matches(rotated, "otp", "challenge:123456", "k1" + stored[2:].replace(":", ""))


def test_a_print_room_copy_sealed_to_the_old_public_key_opens_with_the_print_rooms_old_private_key():
    (private1, public1), (private2, public2) = print_room_keys(), print_room_keys()
    old = crypto.seal_for_recipient({"2026": public1}, b"letter", context=PRINT_CONTEXT)
    new = crypto.seal_for_recipient({"2026": public1, "2027": public2}, b"letter", context=PRINT_CONTEXT)
    assert old.startswith("rs2.2026.") and new.startswith("rs2.2027.")
    print_room = {"2026": private1, "2027": private2}
    assert crypto.open_for_recipient(print_room, old, context=PRINT_CONTEXT) == b"letter"
    assert crypto.open_for_recipient(print_room, new, context=PRINT_CONTEXT) == b"letter"
    assert crypto.open_for_recipient(private1, "rs1." + old.split(".", 2)[2], context=PRINT_CONTEXT) == b"letter"
    with pytest.raises(CannotOpen):
        crypto.open_for_recipient({"2027": private2}, old, context=PRINT_CONTEXT)
