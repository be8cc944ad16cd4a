"""Building the MIME message: stable Message-ID, no medical content (the templates receive none).

No value may add a header or a recipient: every header value is checked for control characters
(the interpreter's email package does not refuse CR LF in a display name before Python 3.11.10), names
are RFC 2047 encoded, and the envelope (MAIL FROM, RCPT TO) is given to the SMTP client explicitly,
never read back from the headers.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import uuid
from email.generator import BytesGenerator
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate, parseaddr

from mailer.emails import RenderedEmail
from shared.contracts import control_character


class UnsafeHeader(ValueError):
    """A value meant for a header holds a control character, or an address is not a plain address."""


def smtp_message_id(message_id: uuid.UUID, mail_from: str, kind: str = "link") -> str:
    """The same secure message always gets the same Message-ID, so duplicates are recognisable;
    each notice about it its own."""
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "convocations.local"
    return f"<{message_id}@{domain}>" if kind == "link" else f"<{message_id}.{kind}@{domain}>"


def bounce_address(domain: str) -> tuple[str, bytes]:
    """A fresh VERP envelope sender ``bounces+<token>@domain`` and the SHA-256 of its token.

    120 random bits, lower-case base32 (relays may fold the case of a local part): opaque, and a
    bounce cannot be forged for a message without having seen its e-mail."""
    token = base64.b32encode(os.urandom(15)).decode().lower()
    return f"bounces+{token}@{domain}", token_hash(token)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.lower().encode()).digest()


def to_bytes(msg: MIMEMultipart) -> bytes:
    """The wire form, CRLF line ends: what is DKIM-signed is exactly what is sent."""
    out = io.BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=msg.policy.clone(linesep="\r\n")).flatten(msg)
    return out.getvalue()


def checked(value: str, what: str) -> str:
    """``value`` unchanged if it holds no control character; else UnsafeHeader naming only ``what``."""
    if found := control_character(value):
        raise UnsafeHeader(f"{what} contains a control character ({found})")
    return value


def plain_address(address: str, what: str) -> str:
    """An addr-spec fit for both a header and RCPT TO: one '@', no spaces, brackets or controls."""
    checked(address, what)
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or any(c in address for c in ' <>(),;:"\\[]'):
        raise UnsafeHeader(f"{what} is not a plain e-mail address")
    return address


def envelope_sender(mail_from: str) -> str:
    """MAIL FROM: the address part of the configured sender."""
    return plain_address(parseaddr(checked(mail_from, "MAIL_FROM"))[1], "MAIL_FROM")


def _mailbox(name: str, address: str) -> str:
    # Always an encoded word for the name: it cannot close a quoted string or start a header.
    return f"{Header(name, 'utf-8').encode()} <{address}>" if name else address


def build_message(
    rendered: RenderedEmail,
    *,
    mail_from: str,
    to_name: str,
    to_address: str,
    message_id: uuid.UUID,
    language: str,
    kind: str = "link",
) -> MIMEMultipart:
    # compat32 email.mime classes: ~2.5x faster than EmailMessage(policy=default) (docs/architecture.md#performance).
    msg = MIMEMultipart("alternative")
    name, address = parseaddr(checked(mail_from, "MAIL_FROM"))
    msg["From"] = _mailbox(name, plain_address(address, "MAIL_FROM"))
    msg["To"] = _mailbox(checked(to_name, "recipient name"), plain_address(to_address, "recipient address"))
    msg["Subject"] = Header(checked(rendered.subject, "subject"), "utf-8")  # type: ignore[assignment]  # compat32 takes a Header
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = smtp_message_id(message_id, mail_from, kind)
    msg["Content-Language"] = checked(language, "language")
    msg["Auto-Submitted"] = "auto-generated"
    msg.attach(MIMEText(rendered.text, "plain", "utf-8"))
    msg.attach(MIMEText(rendered.html, "html", "utf-8"))
    return msg
