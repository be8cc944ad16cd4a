"""Period keys (services/key-store, shared/keystore.py): a period key is made once, kept wrapped, never
destroyed before its end plus the grace, and never used to seal a letter that could outlive it."""

from __future__ import annotations

import asyncio
import base64
import secrets
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from key_store.store import KeyFiles, PeriodClosed, TooEarly, period_bounds
from shared.keystore import KeyStore, PeriodKeyUnavailable

NOW = datetime(2026, 12, 7, 15, 0, tzinfo=timezone.utc)
MASTER = secrets.token_bytes(32)


def files(tmp_path, grace: int = 3600) -> KeyFiles:
    return KeyFiles(tmp_path / "keys", MASTER, period_seconds=7 * 24 * 3600, grace_seconds=grace)


def test_a_week_long_period_is_the_iso_week_of_the_expiry():
    assert period_bounds(datetime(2026, 12, 17, 9, tzinfo=timezone.utc), 7 * 24 * 3600) == (
        "w2026-51",
        datetime(2026, 12, 14, tzinfo=timezone.utc),
        datetime(2026, 12, 21, tzinfo=timezone.utc),
    )


def test_a_period_key_is_made_once_and_kept_wrapped_under_the_master_key(tmp_path):
    store = files(tmp_path)
    first = store.for_expiry(NOW + timedelta(days=10), NOW)
    again = store.for_expiry(NOW + timedelta(days=10, hours=1), NOW)
    assert (again.period_id, again.key) == (first.period_id, first.key)
    assert first.key is not None and len(first.key) == 32
    on_disk = (tmp_path / "keys" / f"{first.period_id}.key").read_bytes()
    assert (
        base64.b64encode(first.key) not in on_disk
        and first.key not in on_disk
        and first.key.hex().encode() not in on_disk
    )
    assert "key=" not in repr(first)  # never in a log line


def test_a_period_key_is_destroyed_only_after_its_end_plus_the_grace(tmp_path):
    store = files(tmp_path, grace=3600)
    period = store.for_expiry(NOW + timedelta(days=3), NOW)
    for too_early in (NOW, period.ends_at, period.destroy_after - timedelta(seconds=1)):
        with pytest.raises(TooEarly):
            store.destroy(period.period_id, too_early)
        assert store.get(period.period_id).key == period.key
    assert store.due(period.destroy_after - timedelta(seconds=1)) == []
    assert [p.period_id for p in store.due(period.destroy_after)] == [period.period_id]
    store.destroy(period.period_id, period.destroy_after)
    assert store.get(period.period_id).key is None
    assert not (tmp_path / "keys" / f"{period.period_id}.key").exists()


def test_no_letter_is_given_a_period_that_has_ended_or_is_destroyed(tmp_path):
    store = files(tmp_path, grace=0)
    period = store.for_expiry(NOW + timedelta(hours=1), NOW)
    with pytest.raises(PeriodClosed):  # the store's clock is past the period: a letter could outlive it
        store.for_expiry(NOW + timedelta(hours=1), period.ends_at)
    store.destroy(period.period_id, period.destroy_after)
    with pytest.raises(PeriodClosed):
        store.for_expiry(period.starts_at, period.ends_at + timedelta(days=1))


def answering(status: int, **period) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        if status != 200:
            return httpx.Response(status, json={"detail": "as the store says"})
        body = {"period_id": "w2026-51", "key": base64.b64encode(bytes(32)).decode()}
        return httpx.Response(200, json=body | {k: v.isoformat() for k, v in period.items()})

    return httpx.MockTransport(answer)


LETTER_EXPIRES = datetime(2036, 12, 17, tzinfo=timezone.utc)
WEEK_START, WEEK_END = datetime(2036, 12, 15, tzinfo=timezone.utc), datetime(2036, 12, 22, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "transport, reason",
    [
        (answering(409), "closed"),
        (answering(410), "destroyed"),
        (answering(403), "refused"),
        (answering(401), "refused"),
        # A store that would destroy the key before the period ends, or whose period ends before the letter.
        (answering(200, starts_at=WEEK_START, ends_at=WEEK_END, destroy_after=WEEK_END - timedelta(hours=1)), "unsafe"),
        (answering(200, starts_at=WEEK_START, ends_at=LETTER_EXPIRES, destroy_after=WEEK_END), "unsafe"),
    ],
)
def test_the_issuer_refuses_to_seal_under_a_period_it_cannot_trust(transport, reason):
    with pytest.raises(PeriodKeyUnavailable) as refused:
        asyncio.run(KeyStore("http://key-store", "t", transport=transport).for_expiry(LETTER_EXPIRES))
    assert refused.value.reason == reason


def test_a_store_that_does_not_answer_is_asked_three_times_then_given_up_on():
    calls = []

    def down(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(PeriodKeyUnavailable) as refused:
        asyncio.run(KeyStore("http://key-store", "t", transport=httpx.MockTransport(down)).get("w2026-51"))
    assert (refused.value.reason, len(calls)) == ("unreachable", 3)
