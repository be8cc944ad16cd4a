"""Issue 22: the hospital gateway as the production overlay ships it (its systems, its broker user and
database role), HL7 v2 over MLLP with TLS and FHIR over HTTPS with a client-credentials token of the
hospital's provider (over HTTPS too): each gets a letter to the hospital's SMTP relay."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from devstack.stack import http
from hospital_gateway import mllp
from tests.e2e.conftest import random_email, random_mobile
from tests.e2e.test_hospital_gateway import SAMPLES, appointment, siu
from tests.waiting import eventually

pytestmark = pytest.mark.production


async def test_hl7_over_mllp_with_tls_and_fhir_over_https_with_a_token_each_become_a_letter(
    production, relay, pki, sso
):
    hl7_email, fhir_email, apt = random_email(), random_email(), f"APT-{uuid.uuid4().hex[:8]}"
    message = siu("siu-s12.hl7", appointment=apt, email=hl7_email, mobile=random_mobile()[0])
    wire = message.replace("\n", "\r").encode()
    port = production.ports["mllp-his"]
    ack = await mllp.send("localhost", port, wire, seconds=10, context=pki.client_context())
    assert b"MSA|AA|MSG-20300301-0001" in ack, ack
    with pytest.raises((ConnectionError, TimeoutError, asyncio.IncompleteReadError, OSError)):
        await mllp.send("127.0.0.1", port, wire, seconds=3)  # plain TCP gets no answer: TLS only

    token = http(
        "POST",
        f"{sso.issuer}/token",
        data={"grant_type": "client_credentials"},
        auth=("his-gateway", "dev-his-gateway-secret"),
        verify=pki.client_context(),
        timeout=10,
    )
    resource = appointment(ident=f"APT-{uuid.uuid4().hex[:8]}", email=fhir_email, mobile=random_mobile()[1])
    base = production.url("hospital-gateway")
    assert base.startswith("https://")
    created = http(
        "POST",
        f"{base}/fhir/Appointment",
        content=json.dumps(resource),
        verify=pki.client_context(),
        headers={"authorization": f"Bearer {token.json()['access_token']}", "content-type": "application/fhir+json"},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    metadata = http("GET", f"{base}/fhir/metadata", verify=pki.client_context(), timeout=10).json()
    assert metadata["resourceType"] == "CapabilityStatement" and (SAMPLES / "appointment.json").exists()

    for email in (hl7_email, fhir_email):
        mail = await eventually(
            lambda e=email: next((m for m in relay.messages if e in m["rcpt"]), None), what=f"the e-mail to {email}"
        )
        assert mail["tls"] and "/m/" in mail["text"]
