"""Issue #3 point 8: the mailer speaks to a real relay over STARTTLS or implicit TLS, with credentials,
verifying the relay's certificate against the CA it is told to trust."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devinbox import parse_email
from tests.patient import find_link

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")]
USER, PASSWORD = "convocations", "relay-password"


def certificate(directory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (its own CA): (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test relay")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "relay.pem", directory / "relay.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_file), str(key_file)


class Relay:
    """Accepts mail only from an authenticated, encrypted session, and remembers how it came."""

    def __init__(self) -> None:
        self.messages: list[dict] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            {
                "rcpt": envelope.rcpt_tos,
                "tls": server.transport.get_extra_info("ssl_object") is not None,
                "login": session.auth_data.login if session.authenticated else None,
                "text": parse_email(envelope.content)["text"],
            }
        )
        return "250 OK"


def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, auth_data=auth_data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_the_mailer_authenticates_over_tls_and_checks_the_relays_certificate(chain, tmp_path, mode):
    cert_file, key_file = certificate(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert_file, key_file)
    relay, port = Relay(), free_port()
    # aiosmtpd only counts STARTTLS as TLS for AUTH; with implicit TLS the whole socket is TLS anyway.
    tls_kwargs = (
        {"tls_context": server_tls, "require_starttls": True}
        if mode == "starttls"
        else {"ssl_context": server_tls, "auth_require_tls": False}
    )
    controller = Controller(
        relay, hostname="127.0.0.1", port=port, authenticator=authenticate, auth_required=True, **tls_kwargs
    )
    controller.start()
    stack = chain.stack
    saved = dict(stack.extra_env.get("mailer", {}))
    stack.extra_env["mailer"] = {
        **saved,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(port),
        "SMTP_TLS": mode,
        "SMTP_USERNAME": USER,
        "SMTP_PASSWORD": PASSWORD,
        "SMTP_CA_FILE": cert_file,
    }
    stack.stop(["mailer"])
    stack.start(["mailer"])
    try:
        event = chain.event()
        await chain.publish(event)
        await chain.wait_status(event["data"]["convocation_id"], "e-mailed")
        (mail,) = [m for m in relay.messages if event["data"]["patient"]["email"] in m["rcpt"]]
        assert mail["tls"] and mail["login"] == USER.encode()
        assert find_link(mail["text"])
    finally:
        stack.extra_env["mailer"] = saved
        stack.stop(["mailer"])
        stack.start(["mailer"])
        controller.stop()
