"""Period keys on disk: one file per period, wrapped under the master key; a tombstone once destroyed.

``<period>.key`` holds the period's times and its key sealed under KEY_STORE_MASTER_KEY (bound to the
period's id); ``<period>.destroyed`` replaces it once destroyed: the times and when, never a key. A period
is created once (a hard link that fails if another process made it first), never changed, and destroyed
only after its end plus the grace: every letter sealed under it has expired by its end, so no live letter
ever loses its key (docs/architecture.md#period-keys).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from shared import crypto

PERIOD_ID = re.compile(r"[A-Za-z0-9-]{1,40}")
# Periods start on Mondays at 00:00 UTC: a week-long period is an ISO week.
ORIGIN = datetime(1970, 1, 5, tzinfo=timezone.utc)
WEEK = 7 * 24 * 3600


class PeriodClosed(Exception):
    """Nothing may be sealed under this period any more: it has ended, or its key is destroyed."""


class TooEarly(Exception):
    """A period key may not be destroyed before its end plus the grace: a letter may still need it."""


@dataclass(frozen=True)
class Period:
    period_id: str
    starts_at: datetime
    ends_at: datetime
    destroy_after: datetime
    key: bytes | None = field(default=None, repr=False)  # None: destroyed; never in a repr
    destroyed_at: datetime | None = None

    def answer(self) -> dict:
        """What a caller receives: the key and the times that bound its use."""
        assert self.key is not None
        return {
            "period_id": self.period_id,
            "key": base64.b64encode(self.key).decode(),
            "starts_at": self.starts_at.isoformat(),
            "ends_at": self.ends_at.isoformat(),
            "destroy_after": self.destroy_after.isoformat(),
        }

    def summary(self) -> dict:
        """What an operator sees of it: the times and the state, never the key."""
        return {
            "period_id": self.period_id,
            "starts_at": self.starts_at.isoformat(),
            "ends_at": self.ends_at.isoformat(),
            "destroy_after": self.destroy_after.isoformat(),
            "state": "destroyed" if self.key is None else "live",
            **({"destroyed_at": self.destroyed_at.isoformat()} if self.destroyed_at else {}),
        }


def period_bounds(at: datetime, seconds: int) -> tuple[str, datetime, datetime]:
    """(id, start, end) of the period of ``seconds`` that holds the instant ``at``."""
    index = int((at - ORIGIN).total_seconds() // seconds)
    start = ORIGIN + timedelta(seconds=index * seconds)
    period_id = start.strftime("w%G-%V") if seconds == WEEK else f"p{start:%Y%m%dT%H%M%S}-{seconds}s"
    return period_id, start, start + timedelta(seconds=seconds)


class KeyFiles:
    def __init__(self, directory: Path, master: crypto.Keys, *, period_seconds: int, grace_seconds: int) -> None:
        self.dir, self.master = directory, crypto.KeyRing.of(master)
        self.period_seconds, self.grace = period_seconds, timedelta(seconds=grace_seconds)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, period_id: str, suffix: str) -> Path:
        if not PERIOD_ID.fullmatch(period_id):
            raise KeyError(period_id)
        return self.dir / f"{period_id}.{suffix}"

    def for_expiry(self, expires_at: datetime, now: datetime) -> Period:
        """The period of a letter expiring at ``expires_at``, its key created on first use. Refused
        (:class:`PeriodClosed`) once the period has ended: a letter sealed then could outlive its key."""
        period_id, start, end = period_bounds(expires_at, self.period_seconds)
        if end <= now:
            raise PeriodClosed(f"period {period_id} ended at {end.isoformat()}")
        try:
            return self.get(period_id)
        except KeyError:
            pass
        period = Period(period_id, start, end, end + self.grace, crypto.KeyRing.of(secrets.token_bytes(32)).current)
        self._create(period)
        return self.get(period_id)  # ours, or the one another request created first

    def _create(self, period: Period) -> None:
        assert period.key is not None
        record = {
            **{k: v for k, v in period.summary().items() if k != "state"},
            "wrapped": crypto.seal_field(
                self.master, {"key": base64.b64encode(period.key).decode()}, context=f"period-key|{period.period_id}"
            ),
        }
        tmp = self._path(period.period_id, f"key.{secrets.token_hex(4)}.tmp")
        _write(tmp, json.dumps(record))
        try:
            os.link(tmp, self._path(period.period_id, "key"))  # fails if the period exists: never overwritten
        except FileExistsError:
            _shred(tmp)  # another request made the period first: this key was never given out
        else:
            tmp.unlink()  # the key file keeps the content
            _fsync_dir(self.dir)

    def get(self, period_id: str) -> Period:
        """A period as stored (KeyError: unknown). A destroyed period has no key."""
        key_file = self._path(period_id, "key")
        tomb = self._path(period_id, "destroyed")
        if tomb.exists():
            return _period(json.loads(tomb.read_text()))
        try:
            record = json.loads(key_file.read_text())
        except FileNotFoundError:
            raise KeyError(period_id) from None
        opened = crypto.open_field(self.master, record["wrapped"], context=f"period-key|{period_id}")
        return _period(record, key=base64.b64decode(opened["key"]))

    def periods(self) -> list[Period]:
        """Every period the store knows, live or destroyed, oldest first (without opening any key)."""
        found = {}
        for path in self.dir.iterdir():
            period_id, _, suffix = path.name.partition(".")
            if suffix in ("key", "destroyed") and PERIOD_ID.fullmatch(period_id):
                record = json.loads(path.read_text())
                if suffix == "destroyed" or period_id not in found:
                    found[period_id] = _period(record, key=b"" if suffix == "key" else None)
        return sorted(found.values(), key=lambda p: p.starts_at)

    def destroy(self, period_id: str, now: datetime) -> Period:
        """Destroy a period's key: refused (:class:`TooEarly`) before its end plus the grace. The tombstone is
        written first, then the key file overwritten and removed; a destroyed period stays destroyed."""
        period = self.get(period_id)
        if period.key is None:
            return period
        if now < period.destroy_after:
            raise TooEarly(
                f"period {period_id} ends at {period.ends_at.isoformat()}; its key may be destroyed from"
                f" {period.destroy_after.isoformat()} on, when every letter sealed under it has expired"
            )
        tomb = {**{k: v for k, v in period.summary().items() if k != "state"}, "destroyed_at": now.isoformat()}
        tmp = self._path(period_id, f"destroyed.{secrets.token_hex(4)}.tmp")
        _write(tmp, json.dumps(tomb))
        os.replace(tmp, self._path(period_id, "destroyed"))
        _shred(self._path(period_id, "key"))
        _fsync_dir(self.dir)
        return self.get(period_id)

    def due(self, now: datetime) -> list[Period]:
        """Live periods whose end plus grace has passed: to destroy now."""
        return [p for p in self.periods() if p.key is not None and p.destroy_after <= now]


def _period(record: dict, key: bytes | None = None) -> Period:
    return Period(
        period_id=record["period_id"],
        starts_at=datetime.fromisoformat(record["starts_at"]),
        ends_at=datetime.fromisoformat(record["ends_at"]),
        destroy_after=datetime.fromisoformat(record["destroy_after"]),
        key=key,
        destroyed_at=datetime.fromisoformat(record["destroyed_at"]) if record.get("destroyed_at") else None,
    )


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _shred(path: Path) -> None:
    """Overwrite a file with zeros, then remove it. On a journaling or copy-on-write file system, or flash,
    old blocks may survive the overwrite; they hold the key wrapped under the master key, and the volume is
    never snapshotted or backed up (docs/runbooks.md, "Key store")."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    with open(path, "r+b") as f:
        f.write(b"\0" * size)
        f.flush()
        os.fsync(f.fileno())
    path.unlink()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
