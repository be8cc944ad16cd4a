"""Issue #7 items 9 and 10: ENVIRONMENT=production refuses unsafe settings, naming the setting, and no
refused start prints a secret."""

from __future__ import annotations

import atexit
import base64
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from pydantic import ValidationError
from secretariat.settings import SecretariatSettings

from access_portal.settings import PortalSettings
from devstack.stack import ROOT, python_path
from issuer.settings import IssuerSettings
from mailer.settings import MailerSettings
from shared.settings import dev_key
from sms_gateway.settings import SmsSettings

SERVICES = (IssuerSettings, MailerSettings, SmsSettings, PortalSettings, SecretariatSettings)
KEY_SETTINGS = (
    "PATIENT_REF_KEY",
    "MAILER_FIELD_KEY",
    "PORTAL_FIELD_KEY",
    "SMS_FIELD_KEY",
    "PORTAL_SECRET_KEY",
    "PRINT_ROOM_PUBLIC_KEY",
    "STAFF_FIELD_KEY",
    "ISSUER_FIELD_KEY",
    "SECRETARIAT_SECRET_KEY",
    "SECRETARIAT_FIELD_KEY",
)


def real_key(name: str) -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _dkim_key_file() -> str:
    """A DKIM private key file, as the mailer's mounted Secret holds one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    directory = tempfile.mkdtemp(prefix="dkim-")
    atexit.register(shutil.rmtree, directory, True)  # a private key: not left in /tmp after the run
    path = os.path.join(directory, "dkim2026.pem")
    with open(path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return path


DKIM_KEY_FILE = _dkim_key_file()


def production_env() -> dict[str, str]:
    """What a hospital's deployment sets: every check passes on this."""
    env = {name: real_key(name) for name in KEY_SETTINGS}
    env |= {
        "ENVIRONMENT": "production",
        "SEAL_KEYS": f"2026:{real_key('seal')}",
        "DATABASE_URL": "postgresql://issuer:Vq7-database-password@db.hospital.example:5432/convocations"
        "?sslmode=verify-full&sslrootcert=/etc/convocations/ca/ca.crt",
        "AMQP_URL": "amqps://issuer:Kp2-broker-password@mq.hospital.example:5671/?cafile=/etc/convocations/ca/ca.crt",
        "PORTAL_BASE_URL": "https://convocations.hospital.example",
        "SMTP_TLS": "starttls",
        "SMTP_HOST": "relay.hospital.example",
        "SMTP_PASSWORD": "Zr9-smtp-password",
        "SMS_AUTH_TOKEN": "Tw4-provider-token",
        "SMS_PROVIDER_URL": "https://api.twilio.com",
        "PUBLIC_BASE_URL": "https://secretariat.hospital.example",
        "OIDC_ISSUER": "https://sso.hospital.example/realm",
        "OIDC_CLIENT_SECRET": "Hs5-console-client-secret",
        "DKIM_KEYS": f"dkim2026:{DKIM_KEY_FILE}",
        "KEY_STORE_TOKEN": "Ks3-" + "k" * 40,
    }
    return env


@pytest.fixture
def production(monkeypatch):
    env = production_env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.mark.parametrize("settings", SERVICES)
def test_a_real_production_configuration_starts(production, settings):
    assert settings().environment == "production"


REFUSALS = [
    (SecretariatSettings, {"OIDC_CLIENT_SECRET": "dev-console-secret"}, "OIDC_CLIENT_SECRET"),
    (SecretariatSettings, {"STAFF_FIELD_KEY": dev_key("staff-field")}, "STAFF_FIELD_KEY"),
    # Issue 18, item 9: the development ISSUER_FIELD_KEY was accepted in production (DEV_KEY_NAMES lacked it).
    (SecretariatSettings, {"ISSUER_FIELD_KEY": dev_key("issuer-field")}, "ISSUER_FIELD_KEY"),
    (IssuerSettings, {"ISSUER_FIELD_KEY": dev_key("issuer-field")}, "ISSUER_FIELD_KEY"),
    (IssuerSettings, {"SECRETARIAT_FIELD_KEY": dev_key("secretariat-field")}, "SECRETARIAT_FIELD_KEY"),
    # ... and an http:// SMS provider, which would receive the patients' numbers and codes in clear.
    (SmsSettings, {"SMS_PROVIDER_URL": "http://api.twilio.com"}, "SMS_PROVIDER_URL"),
    (
        SmsSettings,
        {"SMS_GENERIC_URL": "http://sms-failover.hospital.example/v1", "SMS_GENERIC_TOKEN": "Gn8-failover"},
        "SMS_GENERIC_URL",
    ),
    (
        SmsSettings,
        {"SMS_PROVIDER_URL": "http://api.twilio.com", "SMS_PLAIN_LOCAL_PROVIDER": "true"},
        "SMS_PROVIDER_URL",
    ),
    (SecretariatSettings, {"OIDC_ISSUER": "http://sso.hospital.example/realms/hospital"}, "OIDC_ISSUER"),
    (SecretariatSettings, {"PUBLIC_BASE_URL": "http://secretariat.hospital.example"}, "PUBLIC_BASE_URL"),
    # Accepted before issue 21: staff session cookies without the Secure flag in production.
    (SecretariatSettings, {"COOKIE_SECURE": "false"}, "COOKIE_SECURE"),
    (PortalSettings, {"COOKIE_SECURE": "false"}, "COOKIE_SECURE"),
    (PortalSettings, {"PORTAL_BASE_URL": "http://convocations.hospital.example"}, "PORTAL_BASE_URL"),
    (MailerSettings, {"PORTAL_BASE_URL": "http://convocations.hospital.example"}, "PORTAL_BASE_URL"),
    (MailerSettings, {"SMTP_TLS": "none"}, "SMTP_TLS"),
    (MailerSettings, {"SMTP_TLS": "none", "SMTP_PLAIN_LOCAL_RELAY": "true"}, "SMTP_PLAIN_LOCAL_RELAY"),
    (IssuerSettings, {"DATABASE_URL": "postgresql://issuer:issuer@db:5432/convocations"}, "DATABASE_URL"),
    (IssuerSettings, {"DATABASE_URL": "postgresql://postgres@db:5432/convocations"}, "DATABASE_URL"),
    (MailerSettings, {"DATABASE_URL": "postgresql://mailer:REPLACE_ME_password@db/convocations"}, "DATABASE_URL"),
    (IssuerSettings, {"AMQP_URL": "amqp://guest:guest@mq:5672/"}, "AMQP_URL"),
    (SmsSettings, {"AMQP_URL": "amqp://mq:5672/"}, "AMQP_URL"),
    (PortalSettings, {"AMQP_URL": "amqp://access-portal@mq:5672/"}, "AMQP_URL"),
    (PortalSettings, {"AMQP_URL": "amqp://access-portal:access-portal@mq:5672/"}, "AMQP_URL"),
    # Issue 18, item 5: in clear, or encrypted without checking who answers.
    (IssuerSettings, {"AMQP_URL": "amqp://issuer:Kp2-broker-password@mq:5672/"}, "AMQP_URL"),
    (MailerSettings, {"AMQP_URL": "amqps://mailer:Kp2-broker-password@mq:5671/?no_verify_ssl=1"}, "AMQP_URL"),
    (SmsSettings, {"DATABASE_URL": "postgresql://sms_gateway:Vq7-database-password@db/convocations"}, "DATABASE_URL"),
    (
        PortalSettings,
        {"DATABASE_URL": "postgresql://access_portal:Vq7-database-password@db/c?sslmode=require"},
        "DATABASE_URL",
    ),
    (
        SecretariatSettings,
        {"DATABASE_URL": "postgresql://secretariat:Vq7-database-password@db/c?sslmode=verify-ca"},
        "DATABASE_URL",
    ),
]


@pytest.mark.parametrize("settings,change,named", REFUSALS)
def test_production_refuses_each_unsafe_setting_by_name(production, monkeypatch, settings, change, named):
    for name, value in change.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as exc:
        settings()
    message = str(exc.value)
    assert named in message
    for secret in [*production.values(), *change.values()]:
        if secret not in ("production", "true", "false", "none", "starttls"):
            assert secret not in message


def test_a_plain_relay_on_this_host_is_allowed_when_said_explicitly(production, monkeypatch):
    monkeypatch.setenv("SMTP_TLS", "none")
    monkeypatch.setenv("SMTP_PLAIN_LOCAL_RELAY", "true")
    for host in ("127.0.0.1", "localhost", "::1"):
        monkeypatch.setenv("SMTP_HOST", host)
        assert MailerSettings().smtp_tls == "none"


def test_development_keeps_its_conveniences(monkeypatch):
    monkeypatch.setenv("COOKIE_SECURE", "false")
    monkeypatch.setenv("SMTP_TLS", "none")
    assert not PortalSettings().cookie_secure and MailerSettings().smtp_tls == "none"


def test_secrets_are_masked_in_the_settings_themselves(production):
    shown = repr(IssuerSettings()) + repr(PortalSettings()) + repr(MailerSettings()) + repr(SmsSettings())
    for name in (*KEY_SETTINGS, "SMTP_PASSWORD", "SMS_AUTH_TOKEN"):
        assert production[name] not in shown
    assert base64.b64decode(production["PORTAL_SECRET_KEY"]).hex() not in shown


@pytest.mark.parametrize(
    "package,broken",
    [
        ("access_portal", {"PORTAL_FIELD_KEY": dev_key("portal-field")}),  # the reviewer's case: one dev key left
        ("access_portal", {"COOKIE_SECURE": "false"}),
        ("access_portal", {"SEAL_KEYS": "k1:not-base64!"}),
        ("access_portal", {"OTP_TTL_SECONDS": "soon"}),
        ("mailer", {"SMTP_TLS": "none"}),
    ],
)
def test_a_refused_production_start_prints_no_secret(package, broken):
    """The reviewer's probe: the refusal printed the tail of the settings, PORTAL_SECRET_KEY included."""
    env = {**os.environ, **production_env(), **broken, "PYTHONPATH": python_path()}
    run = subprocess.run([sys.executable, "-m", package], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    output = run.stdout + run.stderr
    assert run.returncode != 0 and next(iter(broken)).lower() in output.lower()
    secrets = {name: env[name] for name in (*KEY_SETTINGS, "SMTP_PASSWORD", "SMS_AUTH_TOKEN")}
    secrets["SEAL_KEYS"] = env["SEAL_KEYS"].split(":", 1)[1]
    secrets |= {url: env[url].split("@")[0].rsplit(":", 1)[1] for url in ("DATABASE_URL", "AMQP_URL")}
    for name, value in secrets.items():
        for piece in (value, value[-12:], value[:12]):
            assert piece not in output, f"part of {name} appears in the refused start's output"


def test_production_refuses_to_send_unsigned_mail(production, monkeypatch):
    monkeypatch.setenv("DKIM_KEYS", "")
    with pytest.raises(ValidationError, match="DKIM_KEYS"):
        MailerSettings()


def test_the_migration_job_refuses_a_database_it_cannot_verify_in_production(monkeypatch):
    """Issue 18, item 5: the schema owner's password crossed the network to whoever answered."""
    from shared.settings import MigrationSettings

    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("DATABASE_URL", "postgresql://issuer_owner:Vq7-owner-password@db/convocations?sslmode=require")
    with pytest.raises(ValidationError, match="sslmode=verify-full") as refused:
        MigrationSettings()
    assert "Vq7-owner-password" not in str(refused.value)
    monkeypatch.setenv(
        "DATABASE_URL",
        "postgresql://issuer_owner:Vq7-owner-password@db/convocations"
        "?sslmode=verify-full&sslrootcert=/etc/convocations/ca/ca.crt",
    )
    assert MigrationSettings().environment == "production"


def test_every_development_key_a_service_defaults_to_is_refused_in_production():
    """A development key added to a settings module without adding it to DEV_KEY_NAMES would be accepted in
    production (issue 18, item 9: ISSUER_FIELD_KEY was)."""
    import re
    from pathlib import Path

    from shared.settings import DEV_KEY_NAMES

    root = Path(__file__).resolve().parents[2]
    used = {
        name
        for path in root.glob("services/*/*/settings.py")
        for name in re.findall(r"dev_key\('([a-z0-9-]+)'\)", path.read_text(encoding="utf-8"))
    }
    assert used and used <= set(DEV_KEY_NAMES), sorted(used - set(DEV_KEY_NAMES))


@pytest.mark.parametrize("settings", [IssuerSettings, PortalSettings])
@pytest.mark.parametrize("token", ["dev-key-store-issuer-token", "dev-key-store-portal-token", "REPLACE_ME", "short"])
def test_production_refuses_a_development_or_short_key_store_token(production, monkeypatch, settings, token):
    monkeypatch.setenv("KEY_STORE_TOKEN", token)
    with pytest.raises(ValueError, match="KEY_STORE_TOKEN is a development or short token"):
        settings()


def key_store_production(monkeypatch) -> None:
    for name, value in {
        "ENVIRONMENT": "production",
        "KEY_STORE_MASTER_KEY": f"m1:{real_key('master')}",
        "ISSUER_TOKEN": "Is1-" + "i" * 40,
        "PORTAL_TOKEN": "Po1-" + "p" * 40,
    }.items():
        monkeypatch.setenv(name, value)


def test_the_key_store_starts_on_a_real_production_configuration(monkeypatch):
    from key_store.settings import WEEK, KeyStoreSettings

    key_store_production(monkeypatch)
    settings = KeyStoreSettings()
    assert (settings.period_seconds, settings.destroy_grace_seconds) == (WEEK, 24 * 3600)


@pytest.mark.parametrize(
    "name, value, refused",
    [
        ("KEY_STORE_MASTER_KEY", dev_key("key-store-master"), "KEY_STORE_MASTER_KEY is a development key"),
        ("ISSUER_TOKEN", "dev-key-store-issuer-token", "ISSUER_TOKEN is a development or short token"),
        ("PORTAL_TOKEN", "short", "PORTAL_TOKEN is a development or short token"),
        ("PORTAL_TOKEN", "Is1-" + "i" * 40, "must differ"),  # the issuer's token: one caller could pose as the other
        ("DESTROY_GRACE_SECONDS", "3", "a grace of an hour or more"),  # the tests' seconds, never in production
        ("PERIOD_SECONDS", "20", "periods of a day or more"),
    ],
)
def test_the_key_store_refuses_development_secrets_and_test_periods_in_production(monkeypatch, name, value, refused):
    from key_store.settings import KeyStoreSettings

    key_store_production(monkeypatch)
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=refused):
        KeyStoreSettings()
