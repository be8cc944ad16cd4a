"""DKIM signing of every outgoing e-mail (dkimpy), and the DNS records a hospital publishes for it."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization

# What a forger would want to change: sender, recipient, subject, date, ids, body structure.
# dkimpy also "oversigns" From, so a second From header added in transit breaks the signature.
SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"content-language",
    b"auto-submitted",
)


def parse_dkim_keys(value: str) -> list[tuple[str, bytes]]:
    """'selector:/path/key.pem,selector:/path/key.pem' -> [(selector, PEM)], the newest (signing) last.

    Keys are read from files (a mounted secret), never from the environment itself."""
    keys: list[tuple[str, bytes]] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        selector, sep, path = item.partition(":")
        if not sep or not selector or not path:
            raise ValueError("DKIM_KEYS expects 'selector:/path/to/private-key.pem' items separated by commas")
        pem = Path(path).read_bytes()
        serialization.load_pem_private_key(pem, password=None)  # fail at start, not at the first e-mail
        keys.append((selector.strip(), pem))
    return keys


@dataclass(frozen=True)
class DkimSigner:
    """Signs with the newest key. The older selectors stay published (and listed here) during a
    rotation, so mail signed with them a moment ago still verifies while it is in transit."""

    domain: str
    keys: tuple[tuple[str, bytes], ...]

    @property
    def selector(self) -> str | None:
        return self.keys[-1][0] if self.keys else None

    def sign(self, raw: bytes) -> bytes:
        """The message with its DKIM-Signature header first; unchanged when no key is configured
        (development only: production refuses to start without DKIM_KEYS)."""
        if not self.keys:
            return raw
        selector, pem = self.keys[-1]
        header = dkim.sign(
            raw,
            selector.encode(),
            self.domain.encode(),
            pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=list(SIGNED_HEADERS),
        )
        return header + raw

    def dns_records(self) -> list[str]:
        """One TXT record per selector, in zone-file form."""
        return [
            f'{selector}._domainkey.{self.domain}. IN TXT "v=DKIM1; k=rsa; p={public_key_b64(pem)}"'
            for selector, pem in self.keys
        ]


def public_key_b64(private_pem: bytes) -> str:
    key = serialization.load_pem_private_key(private_pem, password=None)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def main() -> None:
    """Print the DKIM TXT records to publish for the keys in DKIM_KEYS."""
    from mailer.settings import MailerSettings

    settings = MailerSettings()
    signer = DkimSigner(settings.dkim_domain or settings.sender_domain, tuple(parse_dkim_keys(settings.dkim_keys)))
    for record in signer.dns_records() or ["# DKIM_KEYS is empty: nothing is signed"]:
        print(record)


if __name__ == "__main__":
    main()
