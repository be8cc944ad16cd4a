"""Sealing a convocation (issuer.domain.seal_convocation) and opening it on the portal (PatientAccess.open):
only the e-mailed link opens the letter; keys rotate without locking out older letters; and a thief
holding every database and every server key, but not the link, opens nothing (docs/architecture.md#security)."""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
import uuid
from datetime import datetime, timezone

import httpx
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from access_portal.access import PatientAccess
from access_portal.phones import Phones, phone_storage_context
from access_portal.records import Message
from access_portal.sessions import Sessions
from access_portal.settings import PortalSettings
from devstack.sample import convocation_event, sample_pdf
from issuer import domain
from shared import crypto
from shared.contracts import ConvocationCreatedV1, envelope
from shared.crypto import CannotOpen
from shared.keystore import KeyStore, PeriodKey
from tests.opener import open_letters

PDF = sample_pdf("Convocation: Marie Dupont, cardiologie")
EXPIRES = datetime(2027, 2, 13, 8, 30, tzinfo=timezone.utc)
# The key store's period of that expiry (ISO week 6 of 2027), as it answers the issuer and the portal.
PERIOD = PeriodKey(
    "w2027-06",
    secrets.token_bytes(32),
    datetime(2027, 2, 8, tzinfo=timezone.utc),
    datetime(2027, 2, 15, tzinfo=timezone.utc),
    datetime(2027, 2, 16, tzinfo=timezone.utc),
)


def key() -> bytes:
    return secrets.token_bytes(32)


def convocation(**overrides) -> ConvocationCreatedV1:
    return ConvocationCreatedV1.model_validate(convocation_event(**overrides)["data"])


def sealing_keys(seal_keys: dict[str, bytes] | None = None) -> domain.SealingKeys:
    return domain.SealingKeys(
        seal_keys=seal_keys or {"k1": key()}, patient_ref_key=key(), mailer_field_key=key(), portal_field_key=key()
    )


def seal(c: ConvocationCreatedV1, keys: domain.SealingKeys) -> domain.Sealed:
    return domain.seal_convocation(c, PDF, keys, expires_at=EXPIRES, send_email=True, period=PERIOD)


def server_key_of(seal_keys: dict[str, bytes], sealed: domain.Sealed) -> bytes:
    """The seal key the letter's key id names, bound to its period's key: what opens it with the link."""
    seal_key_id, period_id = crypto.split_key_id(sealed.message.key_id)
    assert period_id == PERIOD.period_id
    return crypto.bound_to_period(seal_keys[seal_key_id], PERIOD.key)


def mailer_view(sealed: domain.Sealed, keys: domain.SealingKeys) -> dict:
    """What the mailer reads from its event (email.requested): address, name and the link secret."""
    assert sealed.email is not None
    return crypto.open_field(
        keys.mailer_field_key,
        sealed.email.for_mailer,
        context=crypto.field_context("email.requested", sealed.message.message_id, "mailer"),
    )


def open_document(sealed: domain.Sealed, link_secret: str, server_key: bytes, purpose: str = "document") -> bytes:
    m = sealed.message
    return crypto.open_sealed(
        crypto.b64d(getattr(m, f"{purpose}_nonce")),
        crypto.b64d(getattr(m, f"{purpose}_ciphertext")),
        link_secret=link_secret,
        server_key=server_key,
        key_id=m.key_id,
        message_id=m.message_id,
        purpose=purpose,
    )


def key_store_answering(*periods: PeriodKey) -> httpx.MockTransport:
    """The key store as the portal's client sees it: these periods' keys, 410 for any other."""

    def answer(request: httpx.Request) -> httpx.Response:
        period = next((p for p in periods if request.url.path == f"/v1/periods/{p.period_id}"), None)
        if period is None:
            return httpx.Response(410, json={"detail": "destroyed"})
        return httpx.Response(
            200,
            json={
                "period_id": period.period_id,
                "key": base64.b64encode(period.key).decode(),
                **{f: getattr(period, f).isoformat() for f in ("starts_at", "ends_at", "destroy_after")},
            },
        )

    return httpx.MockTransport(answer)


class Portal:
    """The portal's PatientAccess.open, called as a test does (the key store's answers are faked)."""

    def __init__(self, seal_keys: dict[str, bytes], *periods: PeriodKey) -> None:
        settings = PortalSettings(environment="development", seal_keys=seal_keys)
        phones = Phones(settings.portal_secret_key, settings.portal_field_key)
        self.access = PatientAccess(settings, lambda: None, phones, Sessions(settings))
        self.access.key_store = KeyStore("http://key-store", "token", transport=key_store_answering(*periods))

    def open(self, message: Message, link_secret: str, purpose: str) -> bytes:
        import asyncio

        return asyncio.run(self.access.open(message, link_secret, purpose))


def portal(seal_keys: dict[str, bytes]) -> Portal:
    return Portal(seal_keys, PERIOD)


def as_message(row: dict) -> Message:
    """The stored message with these columns (the others empty)."""
    return Message(**{**{f.name: None for f in dataclasses.fields(Message)}, **row})


def portal_row(sealed: domain.Sealed) -> dict:
    """The portal's ``message`` row for this event, as its handler stores it."""
    sealed = sealed.message  # type: ignore[assignment]
    return {
        "message_id": sealed.message_id,
        "key_id": sealed.key_id,
        "document_nonce": crypto.b64d(sealed.document_nonce),
        "document_ciphertext": crypto.b64d(sealed.document_ciphertext),
        "details_nonce": crypto.b64d(sealed.details_nonce),
        "details_ciphertext": crypto.b64d(sealed.details_ciphertext),
    }


# --- the round trip ---------------------------------------------------------------------------------


def test_the_e_mailed_link_opens_the_letter_and_its_appointment_details():
    c, keys = convocation(), sealing_keys()
    sealed = seal(c, keys)
    link = mailer_view(sealed, keys)["link_secret"]
    server_key = server_key_of(keys.seal_keys, sealed)
    assert open_document(sealed, link, server_key) == PDF
    details = json.loads(open_document(sealed, link, server_key, "details"))
    assert details["starts_at"] == c.appointment.starts_at.isoformat()
    assert details["department"] == c.appointment.department.name


def test_each_consumer_reads_its_own_field_from_its_own_event():
    c, keys = convocation(mobile="079 123 45 67"), sealing_keys()
    sealed = seal(c, keys)
    mailer = mailer_view(sealed, keys)
    assert (mailer["email"], mailer["name"]) == (c.patient.email, c.patient.name)
    portal_field = crypto.open_field(
        keys.portal_field_key,
        sealed.message.for_portal,
        context=crypto.field_context("message.sealed", sealed.message.message_id, "portal"),
    )
    assert portal_field == {"mobile": "+41791234567"}
    assert sealed.message.patient_ref == crypto.keyed_hash(keys.patient_ref_key, "patient", c.patient.id)


def test_a_letter_going_by_post_sends_no_link_to_the_mailer():
    sealed = domain.seal_convocation(
        convocation(), PDF, sealing_keys(), expires_at=EXPIRES, send_email=False, period=PERIOD
    )
    assert sealed.email is None
    assert "for_mailer" not in sealed.message.model_dump()


@pytest.mark.parametrize("event", ["message", "email"])
def test_neither_event_carries_patient_data_link_or_letter_in_clear(event):
    c, keys = convocation(mobile="+41 79 123 45 67"), sealing_keys()
    sealed = seal(c, keys)
    on_the_bus = getattr(sealed, event).model_dump_json()
    link = mailer_view(sealed, keys)["link_secret"]
    for secret in (
        c.patient.id,
        c.patient.name,
        c.patient.email,
        "+41791234567",
        "791234567",
        link,
        base64.b64encode(PDF).decode()[:40],
        c.appointment.place.address,
    ):
        assert secret not in on_the_bus


def test_every_sealing_draws_a_new_message_id_link_secret_and_nonces():
    c, keys = convocation(), sealing_keys()
    first, second = seal(c, keys), seal(c, keys)
    assert first.message.message_id != second.message.message_id
    assert mailer_view(first, keys)["link_secret"] != mailer_view(second, keys)["link_secret"]
    assert first.message.document_nonce != second.message.document_nonce
    assert first.message.document_ciphertext != second.message.document_ciphertext


def test_the_letter_does_not_open_with_another_messages_link():
    keys = sealing_keys()
    mine, theirs = seal(convocation(), keys), seal(convocation(), keys)
    with pytest.raises(CannotOpen):
        open_document(mine, mailer_view(theirs, keys)["link_secret"], server_key_of(keys.seal_keys, mine))


# --- key rotation -----------------------------------------------------------------------------------


def test_a_letter_sealed_under_k1_still_opens_after_k2_is_added_and_new_letters_use_k2():
    k1, k2 = key(), key()
    before = sealing_keys({"k1": k1})
    old = seal(convocation(), before)
    after = domain.SealingKeys(
        {"k1": k1, "k2": k2}, before.patient_ref_key, before.mailer_field_key, before.portal_field_key
    )
    new = seal(convocation(), after)
    assert (old.message.key_id, new.message.key_id) == ("k1.w2027-06", "k2.w2027-06")
    assert open_document(old, mailer_view(old, after)["link_secret"], server_key_of(after.seal_keys, old)) == PDF
    assert open_document(new, mailer_view(new, after)["link_secret"], server_key_of(after.seal_keys, new)) == PDF
    with pytest.raises(CannotOpen):
        open_document(new, mailer_view(new, after)["link_secret"], crypto.bound_to_period(k1, PERIOD.key))


def test_the_portal_opens_letters_under_every_key_of_its_ring():
    k1, k2 = key(), key()
    old_keys = sealing_keys({"k1": k1})
    new_keys = domain.SealingKeys(
        {"k1": k1, "k2": k2}, old_keys.patient_ref_key, old_keys.mailer_field_key, old_keys.portal_field_key
    )
    old, new = seal(convocation(), old_keys), seal(convocation(), new_keys)
    p = portal({"k1": k1, "k2": k2})
    assert p.open(as_message(portal_row(old)), mailer_view(old, old_keys)["link_secret"], "document") == PDF
    assert p.open(as_message(portal_row(new)), mailer_view(new, new_keys)["link_secret"], "document") == PDF


def test_the_portal_cannot_open_a_letter_whose_key_id_is_not_in_its_ring():
    keys = sealing_keys({"k1": key()})
    sealed = seal(convocation(), keys)
    with pytest.raises(CannotOpen):
        portal({"k2": key()}).open(as_message(portal_row(sealed)), mailer_view(sealed, keys)["link_secret"], "document")


def test_once_its_period_key_is_destroyed_the_link_and_every_seal_key_open_nothing():
    keys = sealing_keys({"k1": key(), "k2": key()})
    sealed = seal(convocation(), keys)
    link = mailer_view(sealed, keys)["link_secret"]
    assert portal(keys.seal_keys).open(as_message(portal_row(sealed)), link, "document") == PDF
    with pytest.raises(CannotOpen):  # the key store answers 410: the period key is gone
        Portal(keys.seal_keys).open(as_message(portal_row(sealed)), link, "document")
    for seal_key in keys.seal_keys.values():  # a seal key alone, or bound to another period's key
        for server_key in (seal_key, crypto.bound_to_period(seal_key, key())):
            with pytest.raises(CannotOpen):
                open_document(sealed, link, server_key)


def test_the_portal_asks_again_for_a_period_key_the_store_made_anew_after_losing_its_volume():
    keys = sealing_keys()
    before = seal(convocation(), keys)  # under PERIOD's key, which the portal then holds
    lost = dataclasses.replace(PERIOD, key=key())  # the store lost its volume and made the period anew
    after = domain.seal_convocation(convocation(), PDF, keys, expires_at=EXPIRES, send_email=True, period=lost)
    answers = [PERIOD, lost]
    p = portal(keys.seal_keys)

    def answer(request: httpx.Request) -> httpx.Response:
        return key_store_answering(answers[0]).handle_request(request)

    p.access.key_store = KeyStore("http://key-store", "token", transport=httpx.MockTransport(answer))
    assert p.open(as_message(portal_row(before)), mailer_view(before, keys)["link_secret"], "document") == PDF
    answers.pop(0)
    assert p.open(as_message(portal_row(after)), mailer_view(after, keys)["link_secret"], "document") == PDF
    with pytest.raises(CannotOpen):  # a wrong link still opens nothing
        p.open(as_message(portal_row(after)), crypto.new_link_secret(), "document")


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda row, link: (row, crypto.new_link_secret()), id="wrong-link"),
        pytest.param(lambda row, link: (row, ""), id="no-link"),
        pytest.param(lambda row, link: (row, link[:-2]), id="malformed-link"),
        pytest.param(lambda row, link: ({**row, "key_id": "k2.w2027-06"}, link), id="key-id-swapped"),
        pytest.param(lambda row, link: ({**row, "message_id": uuid.uuid4()}, link), id="message-id-swapped"),
        pytest.param(lambda row, link: ({**row, "document_ciphertext": None}, link), id="ciphertext-destroyed"),
        pytest.param(lambda row, link: ({**row, "document_nonce": row["details_nonce"]}, link), id="nonce-swapped"),
        pytest.param(
            lambda row, link: ({**row, "document_ciphertext": row["details_ciphertext"]}, link),
            id="details-served-as-document",
        ),
    ],
)
def test_the_portal_refuses_a_wrong_link_or_a_tampered_row(spoil):
    k1, k2 = key(), key()
    keys = sealing_keys({"k1": k1})
    sealed = seal(convocation(), keys)
    row, link = spoil(portal_row(sealed), mailer_view(sealed, keys)["link_secret"])
    with pytest.raises(CannotOpen):
        portal({"k1": k1, "k2": k2}).open(as_message(row), link, "document")


# --- fields stay where they were sealed -------------------------------------------------------------


def test_a_field_moved_to_another_message_or_consumer_does_not_open():
    keys = sealing_keys()
    a, b = seal(convocation(), keys), seal(convocation(), keys)
    assert a.email is not None
    a_id, b_id = a.message.message_id, b.message.message_id
    with pytest.raises(CannotOpen):  # a's link field pasted into b's event
        crypto.open_field(
            keys.mailer_field_key, a.email.for_mailer, context=crypto.field_context("email.requested", b_id, "mailer")
        )
    with pytest.raises(CannotOpen):  # the portal reading the mailer's field
        crypto.open_field(
            keys.portal_field_key, a.email.for_mailer, context=crypto.field_context("email.requested", a_id, "portal")
        )
    with pytest.raises(CannotOpen):  # the mailer reading the portal's field
        crypto.open_field(
            keys.mailer_field_key, a.message.for_portal, context=crypto.field_context("message.sealed", a_id, "mailer")
        )


# --- the print room ---------------------------------------------------------------------------------


def test_the_print_copy_opens_only_with_the_print_rooms_key_for_its_convocation():
    c = convocation()
    private = key()
    token = domain.print_copy(c, PDF, crypto.recipient_public_key(private))
    copy = json.loads(crypto.open_for_recipient(private, token, context=domain.print_room_context(c.convocation_id)))
    assert (copy["patient_id"], copy["patient_name"]) == (c.patient.id, c.patient.name)
    assert base64.b64decode(copy["document_pdf_base64"]) == PDF
    with pytest.raises(CannotOpen):
        crypto.open_for_recipient(key(), token, context=domain.print_room_context(c.convocation_id))
    with pytest.raises(CannotOpen):
        crypto.open_for_recipient(private, token, context=domain.print_room_context(uuid.uuid4()))


# --- the property: every database and every server key, without the link, open nothing -------------


def every_server_key(keys: domain.SealingKeys) -> dict[str, bytes]:
    """Every key the services hold, by name (a ring's keys each), and a few more of the kind."""
    named = {
        "SEAL_KEYS": keys.seal_keys,
        "PATIENT_REF_KEY": keys.patient_ref_key,
        "MAILER_FIELD_KEY": keys.mailer_field_key,
        "PORTAL_FIELD_KEY": keys.portal_field_key,
    }
    found = {f"{name} {kid}": k for name, ring in named.items() for kid, k in crypto.KeyRing.of(ring).items()}
    return found | {"SMS_FIELD_KEY k1": key(), "PORTAL_SECRET_KEY k1": key(), f"period {PERIOD.period_id}": PERIOD.key}


def old_message_sealed_v1(sealed: domain.Sealed, keys: domain.SealingKeys) -> dict:
    """The one event the issuer published before email.requested (message.sealed.v1): the letter and, beside
    it, the link sealed for the mailer, exactly as the issuer sealed it then."""
    m, link = sealed.message, mailer_view(sealed, keys)
    for_mailer = crypto.seal_field(
        keys.mailer_field_key, link, context=crypto.field_context("message.sealed", m.message_id, "mailer")
    )
    return {**m.model_dump(mode="json"), "send_email": True, "for_mailer": for_mailer}


@pytest.mark.parametrize("event", ["message", "email"])
def test_no_copy_of_either_event_opens_the_letter_with_every_server_key(event):
    """Each event alone is what a retry copy, a holding queue or a dead-letter queue keeps: every server
    key on every field of it, in every combination, opens nothing (tests/opener.py)."""
    keys = sealing_keys({"k1": key(), "k2": key()})
    sealed = seal(convocation(), keys)
    copy = envelope(getattr(sealed, event), producer="issuer", correlation_id=uuid.uuid4()).model_dump_json()
    assert open_letters([copy], every_server_key(keys)) == []


def test_the_opener_opens_a_copy_holding_both_halves_as_message_sealed_v1_did():
    """The same opener on the event of the earlier design (letter and link in one message.sealed.v1), and
    on the two halves gathered together: it opens the letter, so an empty answer above means something."""
    keys = sealing_keys()
    sealed = seal(convocation(), keys)
    old = envelope(sealed.message, producer="issuer", correlation_id=uuid.uuid4()).model_dump(mode="json")
    old["data"] = old_message_sealed_v1(sealed, keys)
    assert any("the letter" in o.how for o in open_letters([json.dumps(old)], every_server_key(keys)))
    together = [sealed.message.model_dump_json(), sealed.email.model_dump_json() if sealed.email else ""]
    assert any("the letter" in o.how for o in open_letters(together, every_server_key(keys)))
    # Without MAILER_FIELD_KEY (the key that opens the link) even both halves open nothing.
    without = {name: k for name, k in every_server_key(keys).items() if not name.startswith("MAILER")}
    assert open_letters(together, without) == []


def test_every_database_plus_every_server_key_without_the_link_opens_nothing():
    """A thief holds every key of every service and every row at rest. The link secret reaches no
    table: it travels only inside ``for_mailer`` on email.requested (opened by the mailer to write the
    e-mail, never stored) and in the e-mail. So no key, no stored value and nothing derived from them opens the
    letter — used as the link secret, as the server key, or as the AES key itself."""
    c, keys = convocation(mobile="+41 79 123 45 67"), sealing_keys({"k1": key(), "k2": key()})
    sealed = seal(c, keys).message  # what the portal keeps; the mailer keeps no link
    print_room_private = key()
    server_keys = {
        **{f"seal {kid}": k for kid, k in keys.seal_keys.items()},
        "patient ref": keys.patient_ref_key,
        "mailer field": keys.mailer_field_key,
        "portal field": keys.portal_field_key,
        "sms field": key(),
        "portal secret": key(),
        "print room public": crypto.recipient_public_key(print_room_private),
        "period": PERIOD.key,
    }
    portal_secret = server_keys["portal secret"]
    mobile = crypto.open_field(
        keys.portal_field_key,
        sealed.for_portal,  # the thief has this key too
        context=crypto.field_context("message.sealed", sealed.message_id, "portal"),
    )["mobile"]
    paper_copy = domain.print_copy(c, PDF, server_keys["print room public"])  # the issuer's row for paper
    at_rest = [
        *(str(v) for v in sealed.model_dump(mode="json").values()),  # the whole event, as the portal keeps it
        mobile,
        crypto.keyed_hash(portal_secret, "phone", mobile),
        crypto.seal_field(keys.portal_field_key, {"phone": mobile}, context=phone_storage_context(sealed.patient_ref)),
        paper_copy,
        crypto.keyed_hash(portal_secret, "session", secrets.token_urlsafe(32)),
    ]
    raw_keys = list(server_keys.values())
    link_guesses = at_rest + [
        encode(k)
        for k in raw_keys
        for encode in (
            lambda k: base64.urlsafe_b64encode(k).rstrip(b"=").decode(),
            lambda k: base64.b64encode(k).decode(),
            bytes.hex,
        )
    ]
    server_key_guesses = raw_keys + [v.encode() for v in at_rest]
    assert sum(1 for g in link_guesses if _well_formed_link(g)) >= len(raw_keys), "the guesses reach the AES step"

    for purpose in ("document", "details"):
        nonce, ciphertext = (crypto.b64d(getattr(sealed, f"{purpose}_{part}")) for part in ("nonce", "ciphertext"))
        for link in link_guesses:
            for server_key in server_key_guesses:
                with pytest.raises(CannotOpen):
                    crypto.open_sealed(
                        nonce,
                        ciphertext,
                        link_secret=link,
                        server_key=server_key,
                        key_id=sealed.key_id,
                        message_id=sealed.message_id,
                        purpose=purpose,
                    )
        aad = f"{sealed.message_id}|{sealed.key_id}|{purpose}".encode()
        for raw in raw_keys:
            with pytest.raises(InvalidTag):
                AESGCM(raw).decrypt(nonce, ciphertext, aad)

    for raw in raw_keys:  # no service key opens the paper copy either: only the print room's own key
        with pytest.raises(CannotOpen):
            crypto.open_for_recipient(raw, paper_copy, context=domain.print_room_context(c.convocation_id))


def _well_formed_link(text: str) -> bool:
    """A guess the size of a real link secret, so that it reaches key derivation and AES-GCM."""
    try:
        return len(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))) == crypto.LINK_SECRET_BYTES
    except ValueError:
        return False


def phones(settings: PortalSettings) -> Phones:
    return Phones(settings.portal_secret_key, settings.portal_field_key)


def test_a_number_hashed_and_sealed_under_the_old_portal_keys_is_recognised_after_rotation():
    k1, k2, f1, f2 = key(), key(), key(), key()
    before = phones(
        PortalSettings(environment="development", portal_secret_key={"k1": k1}, portal_field_key={"k1": f1})
    )
    after = phones(
        PortalSettings(
            environment="development", portal_secret_key={"k1": k1, "k2": k2}, portal_field_key={"k1": f1, "k2": f2}
        )
    )
    ref = "k1:" + "ab" * 32
    stored_hash, stored_enc = before.hash("+41791234567"), before.seal("+41791234567", ref)
    assert after.hash("+41791234567").startswith("k2:") and stored_hash.startswith("k1:")
    assert after.same_number(stored_hash, stored_enc, ref, after.hash("+41791234567"))
    assert not after.same_number(stored_hash, stored_enc, ref, after.hash("+41791234568"))
    assert stored_hash in after.hashes("+41791234567")  # what the per-number caps look up
    assert after.open(stored_enc, ref) == "+41791234567"


def test_message_sealed_carries_the_patient_ref_under_every_key_of_the_ring():
    k1, k2, c = key(), key(), convocation()

    def ring(refs: dict[str, bytes]) -> domain.SealingKeys:
        return domain.SealingKeys(
            seal_keys={"k1": key()}, patient_ref_key=refs, mailer_field_key=key(), portal_field_key=key()
        )

    before, after = seal(c, ring({"k1": k1})).message, seal(c, ring({"k1": k1, "k2": k2})).message
    assert before.patient_ref.startswith("k1:") and after.patient_ref.startswith("k2:")
    assert before.patient_ref in after.patient_refs and after.patient_ref in after.patient_refs


def test_at_debug_the_amqp_client_logs_no_frame_and_so_no_event_body(capsys):
    """aiormq prints every frame it sends at DEBUG, bodies included: a letter and its link sealed for the mailer
    in one log line (tests/e2e/test_every_copy.py found them). Whatever LOG_LEVEL says, it logs from INFO."""
    import logging

    from shared.logs import configure_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("issuer", "DEBUG")
        for name in ("aiormq.connection", "pamqp.frame", "aio_pika.channel"):
            logging.getLogger(name).debug("Prepare to send ChannelFrame(payload=b'fe2.k1.AAAA')")
        logging.getLogger("issuer.test").debug("the service's own debug line")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    out = capsys.readouterr().out
    assert "ChannelFrame" not in out and "fe2." not in out
    assert "the service's own debug line" in out
