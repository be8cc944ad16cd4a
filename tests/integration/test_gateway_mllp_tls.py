"""Issue 22: the hospital gateway's MLLP listener over TLS, and with mutual TLS when the system's CA is
configured: a client presenting a certificate that CA signed gets its ACK, one without a certificate (or
without TLS) gets nothing. Real sockets and certificates on loopback; the message handling is stubbed."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devstack.stack import free_port
from hospital_gateway import mllp
from hospital_gateway.settings import DEV_SYSTEMS, GatewaySettings

ACK = b"MSH|^~\\&|CONVOCATIONS||||20300101000000+0000||ACK|1|P|2.5.1\rMSA|AA|X\r"


def _pem(directory: Path, name: str, key, cert) -> tuple[str, str]:
    (directory / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                              serialization.PrivateFormat.PKCS8,
                                                              serialization.NoEncryption()))
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(directory / f"{name}.pem"), str(directory / f"{name}.key")


def _issue(ca_key, ca_name, common_name: str, usage, san=None):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=1))
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, tuple[str, str] | str]:
    """A hospital CA, the gateway's server certificate and a hospital system's client certificate."""
    directory = tmp_path_factory.mktemp("mllp-pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Hospital test CA")])
    now = dt.datetime.now(dt.timezone.utc)
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))
    ca_file, _ = _pem(directory, "ca", ca_key, ca)
    server = _pem(directory, "server", *_issue(ca_key, ca_name, "localhost", ExtendedKeyUsageOID.SERVER_AUTH,
                                                [x509.DNSName("localhost"),
                                                 x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]))
    client = _pem(directory, "client", *_issue(ca_key, ca_name, "his.hospital.example", ExtendedKeyUsageOID.CLIENT_AUTH))
    return {"ca": ca_file, "server": server, "client": client}


async def _listening(pki, *, client_ca: bool) -> tuple[mllp.Listeners, int]:
    port = free_port()
    system = {**DEV_SYSTEMS[0], "mllp_port": port, "mllp_client_ca": pki["ca"] if client_ca else None}
    settings = GatewaySettings(hospital_systems=[system], mllp_tls_cert_file=pki["server"][0],
                               mllp_tls_key_file=pki["server"][1])

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
