"""Freezing a dataset version in the background: bounded batches under a lease.

``POST /v1/datasets`` only records the snapshot (the filter, how many labels, the
largest label id) and answers with the version in state ``freezing``. A
:class:`Freezer` thread in the gateway then fills ``dataset_rows``:

- **label batches**: the next ``batch_rows`` matching labels after
  ``freeze_cursor`` (keyset on ``labels.id``, never above ``freeze_max_label_id``),
  numbered ``seq = floor(i * total / n)`` by one ``INSERT ... SELECT``;
- **mixed batches**: source rows copied to their interleaved positions (the draw is
  seeded, so every batch recomputes the same picks);
- **checksum**: the full JSONL export hashed through fresh sessions, then
  ``ready`` with ``row_count`` and ``checksum`` set.

Invariant: each batch is one transaction that locks the version row, checks that
this freezer still holds the lease, inserts its rows and advances ``rows_done`` and
``freeze_cursor``; so a batch either happens once or not at all, and a crashed
batch leaves nothing behind. A gateway that dies mid-freeze leaves its lease to
expire; a freezer that finds only versions leased to others waits for the first
lease to expire (or for a wake), then claims it and continues from the cursor. So
a restarted gateway finishes what it left without anyone polling, and a ``GET`` of
the version or a new freeze wakes one too. The primary keys of ``dataset_rows``
are the backstop: a duplicated batch cannot commit.

It runs in a thread, not on the event loop, on the embedded default and in
production alike: the work is database statements and the checksum pass, and the
gateway already holds the database connection. Workers never import the gateway.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import secrets
import socket
import threading
import time
from datetime import timedelta
from typing import Literal

from sqlalchemy import delete, func, insert, literal, or_, select
from sqlalchemy.orm import Session, sessionmaker

from charter import webhook_events
from charter.db.models import Dataset, DatasetRow, DatasetVersion, Label, as_utc, utcnow
from charter.settings import Settings
from services.gateway.background import OnDemand
from services.gateway.datasets import export, service
from services.gateway.reviews import service as reviews

log = logging.getLogger(__name__)

BATCH_ROWS: int = Settings.model_fields["freeze_batch_rows"].default
"""Rows per batch (one transaction): ~1-3 s on PostgreSQL at the default 50,000."""
LEASE_SECONDS: float = Settings.model_fields["freeze_lease_seconds"].default
"""How long a freezer may go silent before another takes the version over."""

Step = Literal["more", "rows_done", "lost"]


class FreezeFailed(Exception):
    """The snapshot cannot be completed (labels changed under it): the version fails."""


def _lock(session: Session, version_id: str, owner: str) -> DatasetVersion | None:
    """The version, row-locked, if it is freezing and ``owner`` holds its lease."""
    return session.scalar(
        select(DatasetVersion)
        .where(
            DatasetVersion.id == version_id,
            DatasetVersion.state == "freezing",
            DatasetVersion.lease_owner == owner,
        )
        .with_for_update()
    )


def claim(session: Session, owner: str, lease_seconds: float) -> str | None:
    """Lease the oldest freezing version that nobody holds (or whose lease expired)."""
    now = utcnow()
    version = session.scalar(
        select(DatasetVersion)
        .where(
            DatasetVersion.state == "freezing",
            or_(DatasetVersion.lease_owner.is_(None), DatasetVersion.lease_expires_at < now),
        )
        .order_by(DatasetVersion.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if version is None:
        return None
    version.lease_owner = owner
    version.lease_expires_at = now + timedelta(seconds=lease_seconds)
    session.flush()
    return version.id


def seconds_to_expiry(session: Session) -> float | None:
    """Seconds until the first live lease on a freezing version expires; None if none is
    leased (every freezing version is then claimable, or there is none)."""
    now = utcnow()
    first = session.scalar(
        select(func.min(DatasetVersion.lease_expires_at)).where(
            DatasetVersion.state == "freezing", DatasetVersion.lease_expires_at >= now
        )
    )
    return None if first is None else max((as_utc(first) - now).total_seconds(), 0.0)


def _mixed(version: DatasetVersion) -> int:
    return int((version.mix or {}).get("count", 0))


def step(
    session: Session, version_id: str, owner: str, *, batch_rows: int, lease_seconds: float
) -> Step:
    """One batch in the caller's transaction; ``rows_done`` once every row is in."""
    version = _lock(session, version_id, owner)
    if version is None:
        return "lost"
    dataset = session.get_one(Dataset, version.dataset_id)
    total, mixed = version.rows_total, _mixed(version)
    n = total - mixed
    assert version.freeze_cursor is not None and version.freeze_max_label_id is not None
    if version.freeze_cursor < version.freeze_max_label_id:
        _label_batch(session, dataset, version, n, batch_rows)
    elif version.rows_done < total:
        _mixed_batch(session, dataset.project_id, version, n, batch_rows)
    else:
        return "rows_done"
    version.lease_expires_at = utcnow() + timedelta(seconds=lease_seconds)
    session.flush()
    return "more"


def _label_batch(
    session: Session, dataset: Dataset, version: DatasetVersion, n: int, batch_rows: int
) -> None:
    assert version.freeze_cursor is not None and version.freeze_max_label_id is not None
    conditions = service.conditions_of(session, dataset.project_id, dataset.kind, version)
    window = [
        *conditions,
        Label.id > version.freeze_cursor,
        Label.id <= version.freeze_max_label_id,
    ]
    # The batch's last label id: the keyset bound that makes the batch repeatable.
    upper = session.scalar(
        select(Label.id).where(*window).order_by(Label.id).offset(batch_rows - 1).limit(1)
    )
    upper = version.freeze_max_label_id if upper is None else upper
    last = upper == version.freeze_max_label_id
    done, total = version.rows_done, version.rows_total
    seq = (done + func.row_number().over(order_by=Label.id) - 1) * total // n
    chosen = select(literal(version.id), seq, Label.id).where(*window, Label.id <= upper)
    statement = insert(DatasetRow).from_select(["version_id", "seq", "label_id"], chosen)
    inserted = session.execute(statement.execution_options(preserve_rowcount=True)).rowcount
    if done + inserted > n or (last and done + inserted != n):
        raise FreezeFailed(
            f"the filter's labels changed while the version was frozen ({done + inserted} "
            f"rows, not {n}); create the version again"
        )
    if version.filter.get("review") == "human_verdicts" and dataset.kind == "preference":
        human = reviews.apply_human_choices(session, version.id, version.freeze_cursor, upper)
        if human != inserted:
            raise FreezeFailed(
                "the human verdicts changed while the version was frozen; create it again"
            )
    version.rows_done = done + inserted
    version.freeze_cursor = upper


def _mixed_batch(
    session: Session, project_id: str, version: DatasetVersion, n: int, batch_rows: int
) -> None:
    assert version.mix is not None
    _, source = service.resolve(session, project_id, version.mix["source"])
    mixed = _mixed(version)
    lo = version.rows_done - n
    hi = min(lo + batch_rows, mixed)
    picks = random.Random(version.mix["seed"]).sample(range(source.row_count), mixed)[lo:hi]
    service.copy_rows(
        session, source.id, version.id, picks, service.mixed_positions(n, mixed, lo, hi)
    )
    version.rows_done += hi - lo


def finish(session: Session, version_id: str, owner: str, checksum: str) -> bool:
    version = _lock(session, version_id, owner)
    if version is None:
        return False
    version.state = "ready"
    version.row_count = version.rows_total
    version.checksum = checksum
    version.ready_at = utcnow()
    version.lease_owner = version.lease_expires_at = None
    webhook_events.dataset_version_frozen(session, version)
    session.flush()
    return True


def fail(session: Session, version_id: str, owner: str, error: str) -> None:
    """``failed``, with the reason; its partial rows are deleted (nothing can read them)."""
    version = _lock(session, version_id, owner)
    if version is None:
        return
    session.execute(delete(DatasetRow).where(DatasetRow.version_id == version_id))
    version.state, version.error = "failed", error
    version.lease_owner = version.lease_expires_at = None
    session.flush()


def renew(session: Session, version_id: str, owner: str, lease_seconds: float) -> bool:
    version = _lock(session, version_id, owner)
    if version is not None:
        version.lease_expires_at = utcnow() + timedelta(seconds=lease_seconds)
        session.flush()
    return version is not None


def release(session: Session, version_id: str, owner: str) -> None:
    version = _lock(session, version_id, owner)
    if version is not None:
        version.lease_owner = version.lease_expires_at = None
        session.flush()


class Freezer:
    """Freezes versions in one background thread per gateway process, started on demand.

    The thread claims versions until none is left to claim; while some version is
    leased to another freezer (live, or dead and not yet expired: a killed gateway's
    own lease, seen by the gateway restarted in its place) it waits for that lease to
    expire, else it exits; :meth:`wake` starts it again or cuts the wait short.
    ``stop`` (at shutdown) lets the current batch finish and hands the lease back so
    another gateway can continue at once.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        batch_rows: int = BATCH_ROWS,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.sessions = sessions
        self.batch_rows = batch_rows
        self.lease_seconds = lease_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._thread = OnDemand("freezer", self._claim_and_freeze)
        self._stopping = self._thread.stopping
        self._woken = threading.Event()

    def wake(self) -> None:
        """Look for versions to freeze (now, or right after the current one).

        Never raises: it is called after commits and from reads, and a missed wake
        only delays the freeze until the next one (a read of the version, a new
        freeze, a gateway starting).
        """
        self._woken.set()
        try:
            self._thread.wake()
        except Exception:  # e.g. no thread can be started now
            log.exception("the freezer could not be woken; the next wake retries")

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self._woken.set()  # ends a wait for a lease at once
        self._thread.stop(timeout)

    def idle(self) -> bool:
        return self._thread.idle()

    def _claim_and_freeze(self) -> bool:
        """Freeze the next claimable version, or wait for a lease to expire; whether
        to look again."""
        self._woken.clear()  # before the look: a wake after it ends the wait below
        with self.sessions() as session, session.begin():
            version_id = claim(session, self.owner, self.lease_seconds)
            wait = seconds_to_expiry(session) if version_id is None else None
        if version_id is not None:
            self.freeze(version_id)
            return True
        if wait is None:
            return False
        self._woken.wait(wait + 0.05)  # just past the expiry, so the claim sees it expired
        return not self._stopping.is_set()

    def freeze(self, version_id: str) -> bool:
        """Freeze a version this freezer holds the lease of; True once it is ready.

        An unexpected error leaves the lease to expire, so the version is resumed
        later from its last committed batch (a crash looks the same).
        """
        try:
            while True:
                if self._stopping.is_set():
                    with self.sessions() as session, session.begin():
                        release(session, version_id, self.owner)
                    return False
                with self.sessions() as session, session.begin():
                    state = step(
                        session,
                        version_id,
                        self.owner,
                        batch_rows=self.batch_rows,
                        lease_seconds=self.lease_seconds,
                    )
                if state == "lost":
                    return False
                if state == "rows_done":
                    break
            digest = self._checksum(version_id)
            if digest is None:
                return False
            with self.sessions() as session, session.begin():
                return finish(session, version_id, self.owner, digest)
        except FreezeFailed as exc:
            with self.sessions() as session, session.begin():
                fail(session, version_id, self.owner, str(exc))
            return False
        except Exception:
            log.exception(
                "freezing version %s failed; it resumes when its lease expires", version_id
            )
            return False

    def _checksum(self, version_id: str) -> str | None:
        """sha256 of the version's JSONL export, renewing the lease as it reads."""
        with self.sessions() as session:
            version = session.get_one(DatasetVersion, version_id)
            kind = session.get_one(Dataset, version.dataset_id).kind
            total = version.rows_total
        digest = hashlib.sha256()
        renewed = time.monotonic()
        for data in export.jsonl(self.sessions, version_id, kind, 0, total):
            digest.update(data)
            if time.monotonic() - renewed > self.lease_seconds / 4:
                with self.sessions() as session, session.begin():
                    if not renew(session, version_id, self.owner, self.lease_seconds):
                        return None
                renewed = time.monotonic()
        return digest.hexdigest()
