"""Issue 22: the hospital gateway's MLLP listener over TLS, and with mutual TLS when the system's CA is
configured: a client presenting a certificate that CA signed gets its ACK, one without a certificate (or
without TLS) gets nothing. Real sockets and certificates on loopback; the message handling is stubbed."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from devstack.stack import free_port
from hospital_gateway import mllp
from hospital_gateway.settings import DEV_SYSTEMS, GatewaySettings
from tests.production.conftest import PrivateCA

ACK = b"MSH|^~\\&|CONVOCATIONS||||20300101000000+0000||ACK|1|P|2.5.1\rMSA|AA|X\r"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict:
    """A hospital CA, the gateway's server certificate and a hospital system's client certificate."""
    ca = PrivateCA(tmp_path_factory.mktemp("mllp-pki"))
    return {
        "ca": str(ca.ca_file),
        "server": (str(ca.cert_file), str(ca.key_file)),
        "client": tuple(map(str, ca.client_certificate("his.hospital.example"))),
    }


async def _listening(pki, *, client_ca: bool) -> tuple[mllp.Listeners, int]:
    port = free_port()
    system = {**DEV_SYSTEMS[0], "mllp_port": port, "mllp_client_ca": pki["ca"] if client_ca else None}
    settings = GatewaySettings(
        hospital_systems=[system], mllp_tls_cert_file=pki["server"][0], mllp_tls_key_file=pki["server"][1]
    )

    async def answer(_system, _data: bytes) -> bytes:
        return ACK

    listeners = mllp.Listeners(settings, answer)
    await listeners.start()
    return listeners, port


def _client(pki, *, certificate: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki["ca"])
    if certificate:
        context.load_cert_chain(*pki["client"])
    return context


async def test_mllp_over_tls_answers_and_plain_tcp_gets_nothing(pki):
    listeners, port = await _listening(pki, client_ca=False)
    try:
        assert await mllp.send("localhost", port, b"MSH|x", seconds=5, context=_client(pki, certificate=False)) == ACK
        with pytest.raises((ConnectionError, TimeoutError, asyncio.IncompleteReadError, OSError)):
            await mllp.send("127.0.0.1", port, b"MSH|x", seconds=2)
    finally:
        await listeners.stop()


async def test_with_the_systems_ca_only_a_client_certificate_it_signed_gets_in(pki):
    listeners, port = await _listening(pki, client_ca=True)
    try:
        assert await mllp.send("localhost", port, b"MSH|x", seconds=5, context=_client(pki, certificate=True)) == ACK
        with pytest.raises((ConnectionError, TimeoutError, asyncio.IncompleteReadError, OSError)):
            await mllp.send("localhost", port, b"MSH|x", seconds=3, context=_client(pki, certificate=False))
    finally:
        await listeners.stop()
