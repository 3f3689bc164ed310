"""One unfinished compute job per agreement, across every Provider replica: a claim table.

Dagster has no unique key on run tags, so two Providers that both look for an agreement's runs and
find none could both launch one. The claim closes that window: before launching, the start route
inserts (agreement id, job id) into `provider_agreements`, whose primary key is the agreement id, in
the same database as the nonces. The insert is atomic; of concurrent starts exactly one gets the row.

A row that is already there belongs to an earlier job. It is taken over (compare-and-set on the old
job id and claim time, so two takers cannot both win) when that job is over:
- its run has finished (read through the operator), or
- it has no run at all and the claim is older than `stale_after` seconds: the Provider that claimed
  it died (or Dagster refused the launch) between the claim and `launchRun`.
Otherwise the start is refused with the conflict Ocean's clients know (400). The same job id
claiming again (a retried start) is let through: the operator's submit is idempotent per job id.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from sqlalchemy import Column, Float, MetaData, String, Table, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

if TYPE_CHECKING:
    from provider_api.dagster_jobs import DagsterJobs

TABLE = "provider_agreements"
# A claim with no run behind it is abandoned after this long. launchRun answers in well under a second,
# and the operator's HTTP timeout is 10 s; two minutes leaves room for a slow Dagster.
STALE_AFTER = 120.0
# Compare-and-set rounds before giving up; each lost round means another start moved the row.
MAX_ROUNDS = 5


class Holder(Enum):
    """What became of the job holding a claim, as the operator sees it."""

    RUNNING = "running"  # a run exists and has not finished
    FINISHED = "finished"  # its run finished: the agreement is free
    MISSING = "missing"  # no run for that job id (yet, or ever)


class ClaimStoreUnavailable(RuntimeError):
    """The database behind the claims failed (the Provider answers 503)."""


class AgreementBusy(RuntimeError):
    """The agreement has an unfinished job; Ocean allows one at a time."""

    def __init__(self, agreement_id: str, job_id: str) -> None:
        super().__init__(
            f"agreementId {agreement_id} already has an unfinished compute job ({job_id}); "
            "wait for it to finish or stop it"
        )
        self.agreement_id = agreement_id
        self.job_id = job_id


@dataclass(frozen=True)
class Claim:
    agreement_id: str
    job_id: str
    created: float


class AgreementClaims:
    """The claim table on `engine` (the nonce store's), created by the Provider's migrations."""

    def __init__(self, engine: Engine, *, schema: str | None = None, stale_after: float = STALE_AFTER):
        self.engine = engine
        self.stale_after = stale_after
        self._sqlite = engine.dialect.name == "sqlite"
        self.table = Table(
            TABLE,
            MetaData(schema=schema),
            Column("agreement_id", String(200), primary_key=True),
            Column("job_id", String(200), nullable=False),
            Column("created", Float, nullable=False),
        )

    def get(self, agreement_id: str) -> Claim | None:
        try:
            with self.engine.connect() as conn:
                row = conn.execute(
                    select(self.table.c.job_id, self.table.c.created).where(
                        self.table.c.agreement_id == agreement_id
                    )
                ).first()
        except SQLAlchemyError as error:
            raise ClaimStoreUnavailable(_failure(error)) from error
        return None if row is None else Claim(agreement_id, str(row[0]), float(row[1]))

    def _insert(self, agreement_id: str, job_id: str, now: float) -> bool:
        dialect_insert = sqlite_insert if self._sqlite else pg_insert
        statement = (
            dialect_insert(self.table)
            .values(agreement_id=agreement_id, job_id=job_id, created=now)
            .on_conflict_do_nothing()
        )
        with self.engine.begin() as conn:
            return conn.execute(statement).rowcount == 1

    def _take_over(self, old: Claim, job_id: str, now: float) -> bool:
        table = self.table
        statement = (
            update(table)
            .where(
                table.c.agreement_id == old.agreement_id,
                table.c.job_id == old.job_id,
                table.c.created == old.created,
            )
            .values(job_id=job_id, created=now)
        )
        with self.engine.begin() as conn:
            return conn.execute(statement).rowcount == 1

    def claim(self, agreement_id: str, job_id: str, holder: Callable[[str], Holder]) -> Claim:
        """Claim `agreement_id` for `job_id`, or raise AgreementBusy naming the job that holds it.

        `holder(job_id)` tells what became of the job holding an existing claim (the operator asks
        Dagster); it is called only when the row is held by another job id.
        """
        for _ in range(MAX_ROUNDS):
            now = time.time()
            try:
                if self._insert(agreement_id, job_id, now):
                    return Claim(agreement_id, job_id, now)
            except SQLAlchemyError as error:
                raise ClaimStoreUnavailable(_failure(error)) from error
            existing = self.get(agreement_id)
            if existing is None:
                continue  # released between our insert and our read: insert again
            if existing.job_id == job_id:
                return existing  # a retried start of the same job
            state = holder(existing.job_id)
            stale = state is Holder.FINISHED or (
                state is Holder.MISSING and now - existing.created >= self.stale_after
            )
            if not stale:
                raise AgreementBusy(agreement_id, existing.job_id)
            try:
                if self._take_over(existing, job_id, now):
                    return Claim(agreement_id, job_id, now)
            except SQLAlchemyError as error:
                raise ClaimStoreUnavailable(_failure(error)) from error
            # Another start took it over first: look again (it now holds a fresh claim).
        raise ClaimStoreUnavailable(f"agreementId {agreement_id} is contended; try the start again")

    def release(self, agreement_id: str, job_id: str) -> None:
        """Drop the claim if `job_id` still holds it (its launch failed: nothing runs for it)."""
        table = self.table
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    delete(table).where(table.c.agreement_id == agreement_id, table.c.job_id == job_id)
                )
        except SQLAlchemyError as error:
            raise ClaimStoreUnavailable(_failure(error)) from error


def run_holder(operator: DagsterJobs) -> Callable[[str], Holder]:
    """`holder` for `AgreementClaims.claim`, reading the job's run through the operator."""

    def holder(job_id: str) -> Holder:
        record = operator.job(job_id, fresh=True)  # a claim decides on what storage holds now
        if record is None:
            return Holder.MISSING
        return Holder.FINISHED if record.finished else Holder.RUNNING

    return holder


def _failure(error: SQLAlchemyError) -> str:
    return f"the agreement store is unavailable ({type(error).__name__})"
