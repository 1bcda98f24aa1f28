"""Run one chunk of a job: claim, one batched engine pass, one fenced write.

This is the plain function behind the ``labels.run_chunk`` task, tested
directly. It is idempotent by construction: a duplicate delivery finds nothing
claimable and returns at once; a delivery after a crash claims what is left.

Chunk size (``Settings.chunk_size``, default 32) follows from how the engine spends
a call: each pipeline step is ONE engine call over the whole chunk (a compare chunk
scores both orders of every item together), which the transformers engine splits
into length buckets by its cost model (workers/engines/batch_plan.py). Measured on
a 2-core CPU with SmolLM2 (docs/BENCHMARKS.md), scoring then costs nearly the same
per prompt from 8 items a chunk up (the plan uses small buckets of near-equal
length; a pass's fixed cost is small), while sampled decode steps took 15% less per
row at 32 rows than at 16, and the model gives ~3% more at 64. Past 32, bigger
chunks mostly cost parallelism over workers, retry granularity and progress
updates; a job may still ask for its own ``chunk_size``.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from charter.core import critique_templates, feedback_templates, pipelines, prompts
from charter.core.constitution import Constitution
from charter.core.critique_templates import CritiqueTemplate
from charter.core.engine import Engine
from charter.core.feedback_templates import FeedbackTemplate
from charter.core.jobs import (
    FINAL_JOB_STATUSES,
    ItemState,
    JobParams,
    JobType,
    critique_template,
    feedback_template,
    run_of_model,
    samples,
)
from charter.db.models import (
    ConstitutionVersion,
    CritiqueTemplateVersion,
    FeedbackTemplateVersion,
    Job,
    Label,
    Prompt,
    Worker,
    utcnow,
)
from charter.db.session import retry_transient
from charter.log_format import bound
from charter.periodic import Periodic
from charter.settings import Settings
from workers import leases
from workers.engine_cache import RunModelCache
from workers.engine_stats import EngineStats, MeteredEngine

log = logging.getLogger(__name__)

LOCKED_WAIT_SECONDS = 60.0
"""How long a task waits for claimable rows that another transaction holds locked. The
outbox holds its mark until a whole batch of messages is sent (charter.outbox), well
under a second normally; waiting ends as soon as the holder commits."""

DATABASE_WAIT_SECONDS = 300.0
"""How long a chunk waits for an unavailable database (each of its claim, write and
release): longer than a restart or a failover. The lease keeper keeps extending the
lease while a computed chunk waits to be written, so the work is not lost to the
sweeper; past this the task fails and the lease's expiry hands the items on."""


@dataclass
class ChunkReport:
    claimed: int = 0
    labelled: int = 0
    abstained: int = 0
    released: int = 0
    fenced: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class ChunkRunner:
    sessions: sessionmaker[Session]
    engines: dict[str, Engine]
    settings: Settings
    worker_id: str
    republish: Callable[[str], None] = lambda job_id: None
    """Called after items were given back, so they are retried without waiting for the sweeper."""
    stats: EngineStats = field(default_factory=EngineStats)
    """Engine calls, seconds, batch sizes and tokens; the heartbeat writes them."""
    run_models: RunModelCache | None = None
    """Loads the ``run:<id>`` models not in ``engines`` on demand (a worker serving
    ``run:*``); None: only ``engines`` are served."""
    _constitutions: dict[str, Constitution] = field(default_factory=dict, init=False, repr=False)
    _templates: dict[tuple[str, str, str], Any] = field(
        default_factory=dict, init=False, repr=False
    )
    """Project templates by (table, project, pinned ref): immutable, read once."""

    def run_chunk(self, job_id: str, chunk: int) -> ChunkReport:
        """Claim, run and write what is claimable of a chunk.

        While the database is unavailable (a restart, a failover, writes refused) the
        chunk waits for it, up to DATABASE_WAIT_SECONDS, instead of failing: a failed
        task is acked, and the items it could not claim would sit queued, their
        message gone, until the sweeper's ``republish_after_seconds``.
        """
        report = ChunkReport()
        self.stats.current_chunk = f"{job_id}:{chunk}"
        try:
            with bound(job_id=job_id, chunk=chunk):
                retry_transient(
                    lambda retry: self._run_chunk(job_id, chunk, report, adopt=retry),
                    seconds=DATABASE_WAIT_SECONDS,
                    what=f"job {job_id} chunk {chunk}",
                )
        finally:
            self.stats.current_chunk = None
        return report

    def _run_chunk(self, job_id: str, chunk: int, report: ChunkReport, *, adopt: bool) -> None:
        tried: set[int] = set()
        wait_until: float | None = None
        while True:
            # One transaction reads the job and claims: every round trip counts when
            # the engine is fast (bench/scheduling_overhead.py).
            with self.sessions() as session, session.begin():
                job = session.get(Job, job_id)
                if job is None or job.status in FINAL_JOB_STATUSES:
                    break
                # None for a run model to load: after the claim, not in this transaction
                engine = self.engines.get(job.model)
                if engine is None and not self._loads(job.model):
                    log.error("job %s wants model %s, not served here", job_id, job.model)
                    break
                constitution = self._constitution(session, job.constitution_version_id)
                # After a lost connection the last claim may have committed: resume it.
                mine = leases.held_by(session, job_id, chunk, self.worker_id) if adopt else []
                adopt = False
                claimed = mine or leases.claim(
                    session,
                    job_id,
                    chunk,
                    self.worker_id,
                    lease_seconds=self.settings.lease_seconds,
                    max_attempts=self.settings.max_attempts,
                    exclude=tried,
                )
                items = self._items(session, claimed)
                # Nothing claimed: done already (a duplicate delivery, items failed at
                # max_attempts just now) or rows that were skipped because another
                # transaction held them, usually the outbox marking this very message
                # as sent: had we returned, the message would be acked and nothing
                # would send it again.
                locked, held = False, {}
                if not claimed:
                    leases.complete_if_done(session, job_id)
                    locked = leases.claimable_count(session, job_id, chunk, tried) > 0
                    if not locked and not tried:
                        held = leases.holders(session, job_id, chunk)
                session.expunge(job)
            if locked:
                wait_until = wait_until or time.monotonic() + LOCKED_WAIT_SECONDS
                if time.monotonic() < wait_until:
                    time.sleep(0.05)  # until that transaction ends: then claim or see it taken
                    continue
            if not claimed:
                if held:  # a redelivery of live work: a visibility timeout, a broker reconnect
                    owners = ", ".join(f"{n} held by {owner}" for owner, n in held.items())
                    log.warning(
                        "job %s chunk %s: nothing to claim: %s under lease", job_id, chunk, owners
                    )
                elif not tried:
                    log.info("job %s chunk %s: nothing to claim: done already", job_id, chunk)
                break
            wait_until = None
            tried.update(c.item_id for c in claimed)
            report.claimed += len(claimed)
            params = JobParams.model_validate(
                {k: v for k, v in job.params.items() if k != "chunk_size"}
            )
            with bound(item_ids=[c.item_id for c in claimed]):  # on every log line
                self._process(job, constitution, params, engine, chunk, claimed, items, report)
            # A first claim took every claimable item it could lock (only retries go one
            # by one). Rows another transaction held were skipped: once it ends they are
            # claimed here, since no other message may come for them.
            whole = len(claimed) > 1 or claimed[0].attempt == 1
            if whole and (
                len(claimed) >= self._chunk_items(job, chunk)
                or not self._left(job_id, chunk, tried)
            ):
                break
        if report.released:
            self.republish(job_id)

    def _loads(self, model: str) -> bool:
        """Whether ``run_models`` loads ``model`` on demand."""
        return self.run_models is not None and run_of_model(model) is not None

    def _chunk_items(self, job: Job, chunk: int) -> int:
        """How many items the chunk has (prompt position // chunk size, as submitted)."""
        size = int(job.params.get("chunk_size") or self.settings.chunk_size)
        return max(0, min(size, job.item_count - chunk * size))

    def _left(self, job_id: str, chunk: int, tried: set[int]) -> bool:
        """Whether claimable items of the chunk remain (skipped because they were locked)."""
        with self.sessions() as session:
            return leases.claimable_count(session, job_id, chunk, tried) > 0

    def _constitution(self, session: Session, version_id: str) -> Constitution:
        """Versions are immutable: parse each once per process, not once per chunk."""
        if version_id not in self._constitutions:
            version = session.get_one(ConstitutionVersion, version_id)
            self._constitutions[version_id] = Constitution.model_validate(version.content)
        return self._constitutions[version_id]

    def _template(self, project_id: str, ref: str) -> FeedbackTemplate:
        """A shipped feedback template, or the project's own at the version the job
        pinned (immutable: read once per process)."""
        if ref in feedback_templates.BUILT_IN:
            return feedback_templates.BUILT_IN[ref]
        return self._stored(FeedbackTemplateVersion, feedback_templates.from_spec, project_id, ref)

    def _critique_template(self, project_id: str, ref: str) -> CritiqueTemplate:
        """The same for critique templates."""
        if ref in critique_templates.BUILT_IN:
            return critique_templates.BUILT_IN[ref]
        return self._stored(CritiqueTemplateVersion, critique_templates.from_spec, project_id, ref)

    def _stored(self, table: Any, from_spec: Any, project_id: str, ref: str) -> Any:
        key = (table.__tablename__, project_id, ref)
        if key not in self._templates:
            name, version = feedback_templates.parse_ref(ref)
            with self.sessions() as session:
                row = session.scalars(
                    select(table).filter_by(project_id=project_id, name=name, version=version)
                ).one()
            self._templates[key] = from_spec(row.name, row.version, row.spec)
        return self._templates[key]

    def _items(self, session: Session, claimed: list[leases.Claimed]) -> list[pipelines.Item]:
        if not claimed:
            return []
        rows = {
            p.id: p
            for p in session.query(Prompt).filter(Prompt.id.in_([c.prompt_id for c in claimed]))
        }
        items = []
        for c in claimed:
            p = rows[c.prompt_id]
            items.append(
                pipelines.Item(
                    item_id=c.item_id,
                    prompt_id=c.prompt_id,
                    position=p.position,
                    attempt=c.attempt,
                    conversation=prompts.user_conversation(p.prompt, p.messages),
                    response=p.response,
                    response_a=p.response_a,
                    response_b=p.response_b,
                )
            )
        return items

    def _process(
        self,
        job: Job,
        constitution: Constitution,
        params: JobParams,
        engine: Engine | None,
        chunk: int,
        claimed: list[leases.Claimed],
        items: list[pipelines.Item],
        report: ChunkReport,
    ) -> None:
        """Run the claimed items and write their outcomes; ``engine`` None: the job's run
        model, loaded here under the lease (``run_models``)."""
        timer = pipelines.Timer()
        resolve = functools.partial(self._template, job.project_id)
        critiques = functools.partial(self._critique_template, job.project_id)
        # Isolated retries get their own sampling key so they do not depend on the old batch.
        chunk_key = (
            chunk
            if len(claimed) > 1 or claimed[0].attempt == 1
            else f"{chunk}/{claimed[0].item_id}"
        )
        try:
            with self._lease_keeper(claimed):
                # A load takes minutes on a GPU: the lease is kept meanwhile, and a load
                # that fails gives the items back with its error, as an engine error does.
                served = engine if engine is not None else self._run_model(job.model)
                metered = MeteredEngine(served, self.stats)
                ctx = pipelines.Context(
                    metered, constitution, params, job.seed, timer, resolve, critiques
                )
                outcomes = timer(
                    "total", lambda: pipelines.run(ctx, JobType(job.type), items, chunk_key)
                )
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.exception("chunk %s/%s failed", job.id, chunk)
            report.errors.append(error)
            report.released += retry_transient(
                lambda _retry: self._release(claimed, error),
                seconds=DATABASE_WAIT_SECONDS,
                what=f"job {job.id} chunk {chunk}: release",
            )
            self._complete_if_done(job.id)
            return
        provenance = self._provenance(job, served, params, timer, len(claimed))
        self._record_sampling(JobType(job.type), params, outcomes)
        # One fenced UPDATE per outcome (all done, or abstained for one reason), one
        # INSERT of the labels: a chunk's write is a few statements, not one per item.
        groups: dict[tuple[str, str | None], list[pipelines.Outcome]] = {}
        for outcome in outcomes:
            status = ItemState.DONE if outcome.abstain_reason is None else ItemState.ABSTAINED
            groups.setdefault((status, outcome.abstain_reason), []).append(outcome)
        # A write that waits for the database keeps its lease (the keeper retries too),
        # so the sweeper does not hand computed work to another worker meanwhile.
        with self._lease_keeper(claimed):
            labelled, abstained, fenced = retry_transient(
                lambda retry: self._write(job, claimed, groups, provenance, in_doubt=retry),
                seconds=DATABASE_WAIT_SECONDS,
                what=f"job {job.id} chunk {chunk}: label write",
            )
        if fenced:  # this attempt's lease was taken over (we stalled): the results are dropped
            log.warning(
                "job %s chunk %s: fenced %d of %d items (attempt %s of %s no longer holds "
                "their lease; results dropped): items %s",
                job.id, chunk, len(fenced), len(claimed), claimed[0].attempt,
                self.worker_id, fenced,
            )  # fmt: skip
        report.fenced += len(fenced)
        self._complete_if_done(job.id)
        report.labelled += labelled
        report.abstained += abstained

    def _run_model(self, model: str) -> Engine:
        assert self.run_models is not None  # checked by _loads before the claim
        return self.run_models.get(model)

    def _write(
        self,
        job: Job,
        claimed: list[leases.Claimed],
        groups: dict[tuple[str, str | None], list[pipelines.Outcome]],
        provenance: dict[str, Any],
        *,
        in_doubt: bool,
    ) -> tuple[int, int, list[int]]:
        """The fenced write, one transaction: (labelled, abstained, fenced item ids).

        ``in_doubt``: an earlier try failed, maybe at its COMMIT, which the server may
        have written before the connection died. Its attempts are then final already,
        and the write is not repeated (it would only be fenced: the items are no
        longer running, and ``labels.work_item_id`` is unique besides).
        """
        by_id = {c.item_id: c for c in claimed}
        with self.sessions() as session, session.begin():
            if in_doubt and (done := leases.finished(session, claimed)):
                log.warning("job %s: the label write committed before its connection died", job.id)
                statuses = list(done.values())
                return statuses.count(ItemState.DONE), statuses.count(ItemState.ABSTAINED), []
            labels, abstained, fenced = [], 0, []
            for (status, reason), group in groups.items():
                held = leases.finish_many(
                    session, [by_id[o.item.item_id] for o in group], self.worker_id, status, reason
                )
                fenced += [o.item.item_id for o in group if o.item.item_id not in held]
                if status == "abstained":
                    abstained += len(held)
                    continue
                labels += [
                    self._label(job, by_id[o.item.item_id], o, provenance)
                    for o in group
                    if o.item.item_id in held
                ]
            if labels:
                session.execute(insert(Label), labels)
            session.execute(
                update(Worker)
                .where(Worker.id == self.worker_id)
                .values(
                    items_done=Worker.items_done + len(labels) + abstained,
                    last_seen=utcnow(),
                )
            )
        return len(labels), abstained, fenced

    def _release(self, claimed: list[leases.Claimed], error: str) -> int:
        """Give the items back after an engine error: how many this attempt still held."""
        with self.sessions() as session, session.begin():
            return sum(
                leases.release(session, c, self.worker_id, error, self.settings.max_attempts)
                for c in claimed
            )

    def _complete_if_done(self, job_id: str) -> None:
        """Checked after the write commits, in a transaction of its own: checked inside
        it, two chunks finishing together would each see the other still running and
        neither would complete the job. The last write to commit sees every other."""
        with self.sessions() as session, session.begin():
            leases.complete_if_done(session, job_id)

    def _provenance(
        self, job: Job, engine: Engine, params: JobParams, timer: pipelines.Timer, n: int
    ) -> dict[str, Any]:
        resolve = functools.partial(self._template, job.project_id)
        template = feedback_template(JobType(job.type), params, resolve)
        critiques = functools.partial(self._critique_template, job.project_id)
        critique = critique_template(JobType(job.type), params, critiques)
        return {
            "constitution_version_id": job.constitution_version_id,
            "constitution_ref": job.constitution_ref,
            "model": job.model,
            "model_revision": engine.model_revision,
            "engine": engine.engine_name,
            "template_version": prompts.template_version(template, critique),
            "template_hash": prompts.template_hash(template, critique),
            "job_params": params.model_dump(mode="json"),
            "engine_config_hash": engine.config.compute_hash(),
            "seed": job.seed,
            "worker_id": self.worker_id,
            "timings": {k: round(v, 4) for k, v in timer.seconds.items()} | {"batch_items": n},
        }

    @staticmethod
    def _record_sampling(
        job_type: JobType, params: JobParams, outcomes: list[pipelines.Outcome]
    ) -> None:
        """Each outcome's ``sampling_hash``: the job's sampling parameters' hash where its
        label was made with sampled text (``charter.core.jobs.samples``), else None. The
        per-call seeds are derived from the job's seed (``labels.seed``) and not part of
        it, so every sampled label of a job records the same hash."""
        digest = params.sampling.compute_hash()
        for outcome in outcomes:
            supplied = outcome.item.response_a is not None
            sampled = samples(job_type, params, pair_supplied=supplied)
            outcome.fields["sampling_hash"] = digest if sampled else None

    def _label(
        self,
        job: Job,
        claimed: leases.Claimed,
        outcome: pipelines.Outcome,
        provenance: dict[str, Any],
    ) -> dict[str, Any]:
        """One label row's values, for a bulk insert."""
        return {
            "work_item_id": claimed.item_id,
            "job_id": job.id,
            "project_id": job.project_id,
            "prompt_id": claimed.prompt_id,
            "kind": job.type,
            "conversation": outcome.item.conversation,
            "attempt": claimed.attempt,
            **provenance,
            **{"principle_ids": [], **outcome.fields},
        }

    def _lease_keeper(self, claimed: list[leases.Claimed]) -> Periodic:
        """Extends the lease every third of its length while the batch runs (a
        ``with`` block): a failed extension is retried at the next third."""

        def extend() -> None:
            with self.sessions() as session, session.begin():
                leases.extend(session, claimed, self.worker_id, self.settings.lease_seconds)

        return Periodic("lease-keeper", self.settings.lease_seconds / 3, extend, logger=log)
