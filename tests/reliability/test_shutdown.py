"""Fault matrix, shutdown rows: a worker told to stop in the middle of a chunk.

SIGTERM or SIGINT reaches a worker the ways it does in production: to its whole
process group (Ctrl-C in a terminal, a service manager stopping ``charter
worker``), or to the main process only (``kill``, ``docker stop`` of a
container whose PID 1 is the worker, with or without the images'
``REMAP_SIGTERM=SIGQUIT``). Each time the worker must exit well within
``worker_shutdown_seconds``, and without the hard exit its watchdog keeps for a
process that does not stop (workers/shutdown.py): the pool processes stop their
chunk at once and give its items back, so right after the exit, long before the
long lease here (120 s) could expire, no item is running, each item that was is
queued again with its attempt not counted, and published again: no sweeper
runs in these rows, so only the stopping worker can have sent it. A second
worker then finishes the job, every label at attempt 1.

Further rows: the signal landing in database writes (a fast engine, small
chunks), ``charter worker`` itself, ``charter demo``'s embedded stack (SQLite
and the filesystem broker), the watchdog alone, and SmolLM2 on the transformers
engine, stopped idle after a job (where the warm shutdown once hung: the pool
replaced the pool process the group's SIGTERM had ended, and the replacement
loaded the model, or deadlocked the pool, during the shutdown) and stopped in
the middle of one.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from charter.embedded import settings_env
from tests.reliability.conftest import record_fault
from tests.stack import MODELS_DIR, REAL_MODEL_TIMEOUT, Stack, rows
from workers.shutdown import STACK_SIGNAL

SHUTDOWN_SECONDS = 20.0
"""The bound under test (``worker_shutdown_seconds``); a clean exit takes a second or two."""
MARGIN = 5.0
LEASE_SECONDS = 120.0
"""Far longer than any row: an item found queued after the exit was given back."""
ITEMS, CHUNK = 300, 10
HARD_EXIT = ("still not stopped", "still running at shutdown")
SAMPLING = {"max_tokens": 24, "temperature": 0.7, "top_p": 0.95}


def stop(process: subprocess.Popen[bytes], sig: signal.Signals, target: str) -> float:
    """Send ``sig`` to the worker's group or its main process; seconds until it exited."""
    started = time.monotonic()
    if target == "group":
        os.killpg(process.pid, sig)
    else:
        os.kill(process.pid, sig)
    try:
        process.wait(SHUTDOWN_SECONDS + MARGIN + 30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not exit {SHUTDOWN_SECONDS + MARGIN + 30:.0f} s after {sig}")
    return time.monotonic() - started


def start_cli_worker(stack: Stack, models: list[str], **overrides: Any) -> subprocess.Popen[bytes]:
    """``charter worker`` itself (Celery's ``worker_main``, with mingle and gossip on),
    in its own session like a service, on this stack's settings."""
    name = f"cli-{secrets.token_hex(3)}"
    log = stack.log_dir / f"worker-{name}.log"
    settings = stack.worker_settings(models, **overrides)
    inherited = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHARTER_")}
    env = {**inherited, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
    charter = Path(sys.executable).with_name("charter")
    process = subprocess.Popen(
        [str(charter), "worker", "--name", f"{name}@%h"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stack.names.append(name)
    stack.workers.append(process)
    stack.logs.append(log)
    return process


def running_now(stack: Stack, job_id: str, timeout: float = 120.0) -> dict[int, int]:
    """Items running right now (id -> attempt), once some are done and some run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = stack.items(job_id)
        held = {i.id: i.attempt for i in items if i.status == "running"}
        if held and (any(i.status == "done" for i in items) or len(items) <= CHUNK):
            return held
        time.sleep(0.1)
    pytest.fail(f"no item of job {job_id} running after {timeout:.0f} s\n{stack.tails()}")


def check_given_back(
    stack: Stack, job_id: str, held: dict[int, int], log: Path, *, some: bool = True
) -> tuple[int, dict[str, int]]:
    """Right after the exit: nothing runs, what ran is done or queued again, its attempt
    not counted and published again. How many were given back, and the states."""
    items = {i.id: i for i in stack.items(job_id)}
    states: dict[str, int] = {}
    for item in items.values():
        states[item.status] = states.get(item.status, 0) + 1
    assert states.get("running", 0) == 0, f"items still leased after the exit: {states}"
    given_back = 0
    for item_id, attempt in held.items():
        item = items[item_id]
        assert item.status in ("done", "queued"), item
        if item.status == "queued":
            given_back += 1
            assert item.lease_owner is None, item
            assert item.attempt == attempt - 1, f"the interrupted attempt was counted: {item}"
            assert item.published_at is not None, f"given back but not published again: {item}"
            assert "given back at the shutdown" in (item.last_error or ""), item
    text = log.read_text(errors="replace")
    assert given_back >= some, f"no running item was given back: {held}\n{text[-3000:]}"
    assert not any(marker in text for marker in HARD_EXIT), text[-3000:]
    return given_back, states


def finish(
    stack: Stack,
    model: str,
    job_id: str,
    stopped_at: float,
    timeout: float,
    concurrency: int = 2,
    **worker: Any,
) -> tuple[dict[str, Any], float]:
    """A second worker finishes the job: the tally, and seconds from the signal."""
    stack.start_worker([model], concurrency=concurrency, **worker)
    stack.wait(job_id, timeout=timeout)
    recover = time.monotonic() - stopped_at
    tally = stack.tally({job_id: len(stack.items(job_id))})
    attempts = {label.attempt for label in stack.labels(job_id)}
    assert attempts == {1}, f"an attempt was counted against an item: {attempts}"
    return tally, recover


# --------------------------------------------------------------------------- scripted rows

CASES = {
    "sigterm-group": (signal.SIGTERM, "group", False, "worker SIGTERM mid-chunk"),
    "sigint-group": (signal.SIGINT, "group", False, "worker SIGINT (Ctrl-C) mid-chunk"),
    "sigterm-main": (signal.SIGTERM, "main", False, "worker SIGTERM to the main process mid-chunk"),
    "sigterm-main-remap": (
        signal.SIGTERM,
        "main",
        True,
        "worker SIGTERM to the main process mid-chunk, REMAP_SIGTERM=SIGQUIT (docker)",
    ),
}


def stop_and_finish(
    stack: Stack,
    model: str,
    job_id: str,
    held: dict[int, int],
    fault: str,
    signal_it: Callable[[], float],
) -> None:
    """Stop the worker (``signal_it`` answers how long it took to exit), check what it gave
    back, let a second worker finish the job, and record the row."""
    exit_seconds = signal_it()
    stopped_at = time.monotonic() - exit_seconds
    assert exit_seconds < SHUTDOWN_SECONDS + MARGIN
    given_back, at_exit = check_given_back(stack, job_id, held, stack.logs[0])

    tally, recover = finish(stack, model, job_id, stopped_at, 180, fault_delay_seconds=0.02)
    record_fault(
        fault,
        tally,
        recover_seconds=recover,
        stack="postgres+redis",
        exit_seconds=round(exit_seconds, 2),
        bound_seconds=SHUTDOWN_SECONDS,
        running_at_signal=len(held),
        given_back=given_back,
        at_exit=at_exit,
    )
    assert tally["states"] == {"done": ITEMS}


@pytest.mark.parametrize("case", list(CASES))
def test_stop_mid_chunk_gives_the_chunk_back(
    case: str, make_fault_stack: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch
) -> None:
    sig, target, remap, fault = CASES[case]
    stack = make_fault_stack(
        sweeper=False, lease_seconds=LEASE_SECONDS, worker_shutdown_seconds=SHUTDOWN_SECONDS
    )
    model = stack.new_model()
    if remap:
        monkeypatch.setenv("REMAP_SIGTERM", "SIGQUIT")
    first = stack.start_worker([model], concurrency=2, fault_delay_seconds=1.5)
    monkeypatch.delenv("REMAP_SIGTERM", raising=False)
    job = stack.submit(rows(ITEMS, response=True), model, type="critique", chunk_size=CHUNK)
    held = running_now(stack, job["id"])

    stop_and_finish(stack, model, job["id"], held, fault, lambda: stop(first, sig, target))


def test_stops_during_database_writes_give_everything_back(
    make_fault_stack: Callable[..., Stack],
) -> None:
    """With a fast engine and small chunks a pool process spends its time claiming and
    writing, so the signal lands in the middle of a statement or a commit: three
    workers in turn are stopped so, and a fourth finishes the job."""
    stack = make_fault_stack(
        sweeper=False, lease_seconds=LEASE_SECONDS, worker_shutdown_seconds=SHUTDOWN_SECONDS
    )
    model = stack.new_model()
    job = stack.submit(rows(ITEMS, response=True), model, type="critique", chunk_size=2)
    exits, stopped_at = [], 0.0
    for n in range(3):
        worker = stack.start_worker([model], concurrency=2, fault_delay_seconds=0.01)
        before = sum(i.status == "done" for i in stack.items(job["id"]))
        deadline = time.monotonic() + 120
        while sum(i.status == "done" for i in stack.items(job["id"])) < before + 12:
            assert time.monotonic() < deadline, stack.tails()
            time.sleep(0.05)
        held = {i.id: i.attempt for i in stack.items(job["id"]) if i.status == "running"}
        exits.append(stop(worker, signal.SIGTERM, "group"))
        stopped_at = time.monotonic()
        check_given_back(stack, job["id"], held, stack.logs[n], some=False)
    assert max(exits) < SHUTDOWN_SECONDS + MARGIN, exits

    tally, recover = finish(stack, model, job["id"], stopped_at, 180, fault_delay_seconds=0.01)
    record_fault(
        "worker SIGTERM during database writes (3 workers in turn)",
        tally,
        recover_seconds=recover,
        stack="postgres+redis",
        exit_seconds=[round(e, 2) for e in exits],
        bound_seconds=SHUTDOWN_SECONDS,
    )
    assert tally["states"] == {"done": ITEMS}


def test_charter_worker_cli_stops_mid_chunk(make_fault_stack: Callable[..., Stack]) -> None:
    """The command a deployment runs (``charter worker``: Celery's ``worker_main``)."""
    stack = make_fault_stack(
        sweeper=False, lease_seconds=LEASE_SECONDS, worker_shutdown_seconds=SHUTDOWN_SECONDS
    )
    model = stack.new_model()
    cli = start_cli_worker(stack, [model], fault_delay_seconds=1.5)
    job = stack.submit(rows(ITEMS, response=True), model, type="critique", chunk_size=CHUNK)
    held = running_now(stack, job["id"])

    stop_and_finish(
        stack, model, job["id"], held, "charter worker (CLI) SIGTERM mid-chunk",
        lambda: stop(cli, signal.SIGTERM, "group"),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("sig", "target", "fault"),
    [
        (signal.SIGTERM, "group", "worker SIGTERM when idle after a job (warm shutdown)"),
        (signal.SIGQUIT, "main", "worker SIGQUIT when idle after a job (cold shutdown)"),
    ],
    ids=["warm", "cold"],
)
def test_idle_worker_stops_without_its_backstop(
    sig: signal.Signals, target: str, fault: str, make_fault_stack: Callable[..., Stack]
) -> None:
    """Idle pool processes ignore the terminate signal between tasks (so none dies
    holding the result pipe's lock); they must still leave with the pool, in a warm and
    in a cold shutdown, long before the watchdog would kill them."""
    stack = make_fault_stack(
        sweeper=False, lease_seconds=LEASE_SECONDS, worker_shutdown_seconds=SHUTDOWN_SECONDS
    )
    model = stack.new_model()
    worker = stack.start_worker([model], concurrency=2, fault_delay_seconds=0.01)
    job = stack.submit(rows(40, response=True), model, type="critique", chunk_size=CHUNK)
    stack.wait(job["id"], timeout=120)
    time.sleep(1)

    exit_seconds = stop(worker, sig, target)
    text = stack.logs[0].read_text(errors="replace")
    assert exit_seconds < 0.5 * SHUTDOWN_SECONDS, f"{exit_seconds:.1f} s: waited for the backstop"
    assert not any(marker in text for marker in HARD_EXIT), text[-3000:]
    assert "ForkPoolWorker-3" not in text, "a pool process was forked during the shutdown"
    tally = stack.tally({job["id"]: 40})
    record_fault(
        fault,
        tally,
        recover_seconds=None,
        stack="postgres+redis",
        exit_seconds=round(exit_seconds, 2),
        bound_seconds=SHUTDOWN_SECONDS,
    )
    assert tally["states"] == {"done": 40}


@pytest.fixture
def embedded_stack(tmp_path: Path) -> Any:
    """What ``charter demo`` runs: SQLite and the filesystem broker, no servers (the
    classic billiard pool with its threads, where the warm shutdown deadlocked)."""
    from charter.db.migrate import upgrade
    from charter.db.session import make_engine, session_factory
    from charter.key_issuing import ensure_project, issue_key
    from tests.stack import SECRET, base_settings

    url = f"sqlite:///{tmp_path / 'charter.db'}"
    upgrade(url)
    db = make_engine(url)
    with session_factory(db)() as session, session.begin():
        project = ensure_project(session, "shutdown")
        _, key = issue_key(session, project.id, ["admin"], SECRET, name="shutdown")
    settings = base_settings(
        tmp_path / "data",
        url,
        None,
        lease_seconds=LEASE_SECONDS,
        worker_shutdown_seconds=SHUTDOWN_SECONDS,
    )
    stack = Stack(settings, key, db, tmp_path).open(sweeper=False)
    yield stack
    print(stack.tails())
    stack.close()
    db.dispose()


def test_embedded_stop_process_mid_chunk_and_idle(embedded_stack: Stack) -> None:
    """``charter demo``'s own stop (``charter.embedded.stop_process``: SIGTERM to the
    group, SIGKILL past the bound) never has to kill, mid-chunk or idle."""
    from charter.embedded import stop_process

    stack, n = embedded_stack, 60
    model = stack.new_model()
    first = stack.start_worker([model], fault_delay_seconds=1.0)
    job = stack.submit(rows(n, response=True), model, type="critique", chunk_size=5)
    held = running_now(stack, job["id"])
    started = time.monotonic()
    assert stop_process(first, SHUTDOWN_SECONDS + MARGIN), "killed: it did not stop in time"
    exit_seconds = time.monotonic() - started
    given_back, at_exit = check_given_back(stack, job["id"], held, stack.logs[0])

    tally, recover = finish(stack, model, job["id"], started, 180, fault_delay_seconds=0.02)
    started = time.monotonic()
    assert stop_process(stack.workers[-1], SHUTDOWN_SECONDS + MARGIN)
    idle_seconds = time.monotonic() - started
    text = stack.logs[-1].read_text(errors="replace")
    assert "ForkPoolWorker-3" not in text, "a pool process was forked during the shutdown"
    assert not any(marker in text for marker in HARD_EXIT), text[-3000:]
    record_fault(
        "worker SIGTERM mid-chunk, then idle (charter demo's stop)",
        tally,
        recover_seconds=recover,
        stack="sqlite+filesystem broker",
        exit_seconds=round(exit_seconds, 2),
        idle_exit_seconds=round(idle_seconds, 2),
        bound_seconds=SHUTDOWN_SECONDS,
        running_at_signal=len(held),
        given_back=given_back,
        at_exit=at_exit,
    )
    assert tally["states"] == {"done": n}


def test_watchdog_kills_a_stuck_pool_process_and_exits_at_the_bound(tmp_path: Path) -> None:
    """The backstop alone: a pool process that ignores the terminate signal writes its
    stack to stderr, is killed at three quarters of the bound and given back; a main
    process that never returns exits at the bound with the shutdown's exit code."""
    script = tmp_path / "hung.py"
    script.write_text(
        "import signal, subprocess, sys, time\n"
        "from workers.shutdown import Watchdog\n"
        "stuck = subprocess.Popen([sys.executable, '-c', 'import signal, time\\n"
        "from workers.shutdown import dump_stacks_on_signal\\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); dump_stacks_on_signal()\\n"
        "def stuck_in_here(): time.sleep(600)\\n"
        "print(flush=True); stuck_in_here()'], stdout=subprocess.PIPE)\n"
        "stuck.stdout.readline()  # its handlers are set\n"
        "print('stuck', stuck.pid, flush=True)\n"
        "Watchdog(lambda: [stuck.pid], lambda pid: print('gave back', pid, flush=True), "
        "4.0, 3).start()\n"
        "time.sleep(600)\n"
    )
    started = time.monotonic()
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    seconds = time.monotonic() - started
    stuck = int(done.stdout.split()[1])
    assert done.returncode == 3, done.stderr
    assert f"gave back {stuck}" in done.stdout
    assert "still running at shutdown: its stacks follow; killing it" in done.stderr
    assert "in stuck_in_here" in done.stderr, done.stderr  # the stack it was killed in
    assert "still not stopped" in done.stderr
    assert 4.0 <= seconds < 30
    assert not Path(f"/proc/{stuck}").exists() or "Z" in _state_of(stuck)


def test_stack_signal_writes_stacks_from_a_pool_process_in_its_task(
    make_fault_stack: Callable[..., Stack],
) -> None:
    """The backstop's stack signal in a real worker's pool process, which billiard has
    given handlers of its own: every thread's stack is written, the task is not
    interrupted (SIGUSR1, billiard's soft time limit, raised in it)."""
    stack = make_fault_stack(sweeper=False, lease_seconds=LEASE_SECONDS)
    model = stack.new_model()
    worker = stack.start_worker([model], concurrency=1, fault_delay_seconds=20)
    job = stack.submit(rows(CHUNK, response=True), model, type="critique", chunk_size=CHUNK)
    running_now(stack, job["id"])
    (pool_pid,) = {int(c) for c in Path(f"/proc/{worker.pid}/task/{worker.pid}/children")
                   .read_text().split()}  # fmt: skip
    os.kill(pool_pid, STACK_SIGNAL)
    deadline = time.monotonic() + 30
    while "most recent call first" not in (text := stack.logs[0].read_text(errors="replace")):
        assert time.monotonic() < deadline, text[-3000:]
        time.sleep(0.1)
    time.sleep(1)
    text = stack.logs[0].read_text(errors="replace")
    assert "SoftTimeLimitExceeded" not in text, text[-3000:]
    assert Path(f"/proc/{pool_pid}").exists() and "Z" not in _state_of(pool_pid)
    assert all(i.status == "running" for i in stack.items(job["id"]))


def test_a_pool_process_waits_for_its_unread_results_only_within_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Celery's shutdown may never read a pool process's last result (workers/shutdown.py,
    4.): the process's exit then waits for the bound, not billiard's 30 s."""
    import billiard
    import billiard.pool

    from workers.shutdown import bound_result_wait

    monkeypatch.setattr(billiard.pool, "GUARANTEE_MESSAGE_CONSUMPTION_RETRY_LIMIT", 300)
    bound_result_wait(0.5)
    worker = billiard.pool.Worker.__new__(billiard.pool.Worker)  # its exit's wait alone
    worker.on_ready_counter = billiard.Value("i", 0)
    started = time.monotonic()
    assert worker._ensure_messages_consumed(completed=1) is False  # never read
    assert 0.4 < time.monotonic() - started < 2
    worker.on_ready_counter.value = 1
    assert worker._ensure_messages_consumed(completed=1)  # read: no wait


def _state_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_give_back_releases_only_the_owner_and_uncounts_its_attempt(
    make_fault_stack: Callable[..., Stack], fault_db: Engine
) -> None:
    from charter.db.session import session_factory
    from workers import leases

    stack = make_fault_stack(sweeper=False)
    model = stack.new_model()  # no worker serves it: the test claims by hand
    job = stack.submit(rows(9, response=True), model, type="critique", chunk_size=3)
    sessions = session_factory(fault_db)
    with sessions() as session, session.begin():
        mine = leases.claim(session, job["id"], 0, "me:1", lease_seconds=60, max_attempts=3)
        theirs = leases.claim(session, job["id"], 1, "them:2", lease_seconds=60, max_attempts=3)
    with sessions() as session, session.begin():  # abandoning the delivery of chunk 2
        released, jobs = leases.give_back(session, "me:1", "stopping", (job["id"], 2))
    assert (released, jobs) == (3, {job["id"]})
    items = {i.id: i for i in stack.items(job["id"])}
    for c in mine:
        item = items[c.item_id]
        assert (item.status, item.attempt, item.lease_owner) == ("queued", 0, None)
        assert item.published_at is None and item.last_error == "stopping"
    for c in theirs:  # another owner's lease is never touched
        assert (items[c.item_id].status, items[c.item_id].lease_owner) == ("running", "them:2")
        assert items[c.item_id].published_at is not None
    chunk2 = [i for i in items.values() if i.chunk == 2]
    assert chunk2 and all(i.status == "queued" and i.published_at is None for i in chunk2)
    with sessions() as session, session.begin():  # the old attempt is fenced off
        assert leases.finish_many(session, mine, "me:1", "done", None) == set()


def test_give_back_ends_the_process_own_open_transaction(
    make_fault_stack: Callable[..., Stack], fault_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pool process interrupted inside a transaction may keep that transaction open,
    its rows locked, on a connection nobody will close; the give-back, on a connection
    of its own, would wait for those locks until the watchdog's kill. It ends the
    process's own open sessions first (and its lock wait is bounded all the same)."""
    from sqlalchemy import select, text

    from charter.db.models import WorkItem
    from charter.db.session import session_factory
    from workers import celery_app, leases

    stack = make_fault_stack(sweeper=False)
    model = stack.new_model()  # no worker serves it: this process claims by hand
    job = stack.submit(rows(6, response=True), model, type="critique", chunk_size=3)
    owner = celery_app.worker_id()
    sessions = session_factory(fault_db)
    with sessions() as session, session.begin():
        mine = leases.claim(session, job["id"], 0, owner, lease_seconds=60, max_attempts=3)
    monkeypatch.setattr(celery_app, "settings", stack.settings)

    # The interrupted transaction: it wrote the rows and never ended.
    stranded = fault_db.connect()
    stranded.begin()
    ids = [c.item_id for c in mine]
    stranded.execute(select(WorkItem.id).where(WorkItem.id.in_(ids)).with_for_update())
    stranded_pid = stranded.execute(text("SELECT pg_backend_pid()")).scalar_one()

    started = time.monotonic()
    released = celery_app.give_back(os.getpid(), (job["id"], 0))
    seconds = time.monotonic() - started
    assert released == len(mine) == 3
    assert seconds < celery_app.GIVE_BACK_LOCK_SECONDS, seconds  # not a lock timeout
    items = {i.id: i for i in stack.items(job["id"])}
    assert all(items[i].status == "queued" and items[i].attempt == 0 for i in ids)
    with fault_db.connect() as conn:  # the stranded session was ended, not waited for
        alive = conn.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": stranded_pid}
        ).scalar_one()
    assert alive == 0
    stranded.invalidate()


# --------------------------------------------------------------------------- real model


@pytest.fixture
def smollm2() -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    from charter.model_store import prepare_smollm2

    return prepare_smollm2(MODELS_DIR / "smollm2")


def real_stack(
    make_fault_stack: Callable[..., Stack], smollm2: Path, **overrides: Any
) -> tuple[Stack, str]:
    """A stack whose workers serve SmolLM2 on the transformers engine, under a model name
    of this test's own (so its queue is private, as ``Stack.new_model`` makes them)."""
    model = f"smollm2-{secrets.token_hex(4)}"
    stack = make_fault_stack(
        worker_engine="transformers", models={model: str(smollm2)}, **overrides
    )
    stack.models.append(model)
    stack.gateway.app.state.settings.worker_models.append(model)
    return stack, model


def submit_real(stack: Stack, model: str, n: int) -> dict[str, Any]:
    return stack.submit(
        rows(n, response=True),
        model,
        type="critique",
        chunk_size=3,
        params={"few_shot": False, "sampling": SAMPLING},
    )


@pytest.mark.slow
def test_real_model_worker_stops_idle_after_a_job(
    make_fault_stack: Callable[..., Stack], smollm2: Path
) -> None:
    """The defect as observed: SIGTERM to the group after a job on the transformers
    engine left the main process in its warm shutdown for 40 s and more."""
    stack, model = real_stack(make_fault_stack, smollm2, worker_shutdown_seconds=SHUTDOWN_SECONDS)
    worker = stack.start_worker([model])
    job = submit_real(stack, model, 3)
    stack.wait(job["id"], timeout=REAL_MODEL_TIMEOUT)
    time.sleep(1)

    exit_seconds = stop(worker, signal.SIGTERM, "group")
    text = stack.logs[0].read_text(errors="replace")
    assert exit_seconds < SHUTDOWN_SECONDS + MARGIN
    assert not any(marker in text for marker in HARD_EXIT), text[-3000:]
    assert "ForkPoolWorker-2" not in text, "a pool process was forked during the shutdown"
    tally = stack.tally({job["id"]: 3})
    record_fault(
        "worker SIGTERM when idle after a job",
        tally,
        recover_seconds=None,
        stack="postgres+redis, SmolLM2",
        exit_seconds=round(exit_seconds, 2),
        bound_seconds=SHUTDOWN_SECONDS,
    )


@pytest.mark.slow
def test_real_model_worker_stops_mid_chunk(
    make_fault_stack: Callable[..., Stack], smollm2: Path
) -> None:
    stack, model = real_stack(
        make_fault_stack,
        smollm2,
        sweeper=False,
        lease_seconds=LEASE_SECONDS,
        worker_shutdown_seconds=SHUTDOWN_SECONDS,
    )
    worker = stack.start_worker([model])
    job = submit_real(stack, model, 6)
    held = running_now(stack, job["id"], timeout=REAL_MODEL_TIMEOUT)

    exit_seconds = stop(worker, signal.SIGTERM, "group")
    stopped_at = time.monotonic() - exit_seconds
    assert exit_seconds < SHUTDOWN_SECONDS + MARGIN
    given_back, at_exit = check_given_back(stack, job["id"], held, stack.logs[0])

    tally, recover = finish(stack, model, job["id"], stopped_at, REAL_MODEL_TIMEOUT, 1)
    record_fault(
        "worker SIGTERM mid-chunk",
        tally,
        recover_seconds=recover,
        stack="postgres+redis, SmolLM2",
        exit_seconds=round(exit_seconds, 2),
        bound_seconds=SHUTDOWN_SECONDS,
        running_at_signal=len(held),
        given_back=given_back,
        at_exit=at_exit,
    )
    assert set(tally["states"]) <= {"done", "abstained"}
