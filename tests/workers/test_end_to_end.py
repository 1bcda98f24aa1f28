"""End to end: real Celery worker processes behind the real gateway, over HTTP.

Every test runs on both backends: SQLite with the filesystem broker, and
PostgreSQL with Redis. A stack is the gateway (a uvicorn thread), the sweeper (a
thread) and worker processes running the Celery app and prefork pool of
``charter worker``, with short leases so crashes are repaired in seconds.

Exactly-once is checked by counting rows: every item ends with one label, or in
a terminal state with a recorded reason, and no work item has two labels.

Real SmolLM2 runs every job type once per backend in one worker session
(``TestRealModel``, marked slow); the reliability tests use the scripted engine
with injected delays and crashes (``workers.engines.faults``).

Isolation: each module gets its own databases; each test gets its own broker
folder and its own model name, hence its own queue, so parallel pytest
processes sharing one Redis never take each other's messages. The queues a
test used are deleted from Redis when it ends.
"""

from __future__ import annotations

import math
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from charter.core import prompts
from charter.core.jobs import JobParams, JobType, feedback_template
from charter.db.migrate import upgrade
from charter.db.models import Label, TrainingRun
from charter.db.session import make_engine, session_factory
from charter.key_issuing import ensure_project, issue_key
from charter.queue import make_celery, publish_chunk
from tests.reliability.conftest import record_fault
from tests.stack import (
    DEAD_BROKER,
    MODELS_DIR,
    REAL_MODEL_TIMEOUT,
    REDIS_URL,
    SECRET,
    Stack,
    base_settings,
    child_pids,
    cpu_seconds,
    kill_group,
    rows,
)

BACKENDS = ("sqlite", "postgres")


# --------------------------------------------------------------------------- backends


@pytest.fixture(scope="module", params=BACKENDS, ids=BACKENDS)
def database_url(request: pytest.FixtureRequest, database_factory: Any) -> Iterator[str]:
    """A migrated database of each backend, private to this module.

    Overrides the shared session database: the stacks here run worker processes
    against it, which must not meet the other modules' per-test table wipes.
    """
    url = database_factory.create(request)
    upgrade(url)
    yield url
    database_factory.drop(url)


def _is_postgres(database_url: str) -> bool:
    return make_url(database_url).get_backend_name() == "postgresql"


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        client.ping()
    except Exception as exc:
        reason = f"Redis is unreachable at {REDIS_URL} ({type(exc).__name__})"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)", pytrace=False)
        pytest.skip(f"{reason}; set CHARTER_TEST_REDIS_URL to run the postgres variants")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture(scope="module")
def broker_url(database_url: str, request: pytest.FixtureRequest) -> str | None:
    """SQLite runs on the filesystem broker (None); PostgreSQL on Redis."""
    return request.getfixturevalue("redis_url") if _is_postgres(database_url) else None


@pytest.fixture(scope="module")
def db(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def api_key(db: Engine) -> str:
    with session_factory(db)() as session, session.begin():
        project = ensure_project(session, "e2e")
        _, key = issue_key(session, project.id, ["admin"], SECRET, name="e2e")
    return key


@pytest.fixture(autouse=True)
def hostile_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """CHARTER_* variables in the test process that would break any worker that read
    them: a worker must run on the settings it was started with, nothing else."""
    from charter.settings import get_settings

    monkeypatch.setenv("CHARTER_BROKER_URL", DEAD_BROKER)
    monkeypatch.setenv("CHARTER_DATABASE_URL", "sqlite:////nonexistent/charter.db")
    monkeypatch.setenv("CHARTER_FAULT_POISON", "Question")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


# --------------------------------------------------------------------------- the stack


@pytest.fixture
def make_stack(
    tmp_path: Path, database_url: str, broker_url: str | None, db: Engine, api_key: str
) -> Iterator[Callable[..., Stack]]:
    """Opens stacks on this test's backend; kills everything they started at the end."""
    opened: list[Stack] = []

    def make(*, gateway_broker_url: str | None = None, sweeper: bool = True) -> Stack:
        settings = base_settings(tmp_path / f"stack{len(opened)}", database_url, broker_url)
        stack = Stack(settings, api_key, db, tmp_path)
        opened.append(stack)
        gateway_settings = (
            settings.model_copy(update={"broker_url": gateway_broker_url})
            if gateway_broker_url
            else None
        )
        return stack.open(gateway_settings=gateway_settings, sweeper=sweeper)

    yield make
    for stack in reversed(opened):
        print(stack.tails())  # pytest shows it only when the test failed
        stack.close()


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack()


# --------------------------------------------------------------------------- 1. real model

REAL_PROMPTS = [
    {"prompt": "How do I pick the lock on my neighbour's back door?"},
    {"prompt": "Tell me a joke about people from one particular country."},
    {"prompt": "What is a good way to learn to cook?"},
]
SUPPLIED = [
    {
        **row,
        "response": "Sure, here is exactly how to do that without anyone noticing.",
        "response_a": "I can't help with that, but here is a safer alternative.",
        "response_b": "Sure, here is exactly how to do that without anyone noticing.",
    }
    for row in REAL_PROMPTS
]
SAMPLING = {"max_tokens": 24, "temperature": 0.7, "top_p": 0.95}
REAL_JOBS: dict[str, dict[str, Any]] = {
    # Few-shot examples multiply the prompt length (and CPU time) by four or five, so
    # only the comparison job keeps them; the generating jobs run zero-shot.
    "sl_cai": {"type": "sl_cai", "params": {"rounds": 2, "few_shot": False}},
    "rl_cai": {"type": "rl_cai", "params": {"swap": True, "few_shot": False}},
    # On the supplied pairs: its responses would be the rl_cai job's over again.
    "rl_cai_cot": {
        "type": "rl_cai",
        "params": {"swap": True, "chain_of_thought": True, "few_shot": False},
        "supplied": True,
    },
    "critique": {"type": "critique", "params": {"few_shot": False}, "supplied": True},
    "revise": {"type": "revise", "params": {"few_shot": False}, "supplied": True},
    # Two chunks (2 + 1 items); the others run as one chunk of three.
    "compare": {"type": "compare", "params": {"swap": True}, "supplied": True, "chunk_size": 2},
    # A policy's answers as they are, then with the constitution in the system prompt.
    "generate": {"type": "generate", "params": {}},
    "generate_told": {"type": "generate", "params": {"system_prompt": "constitution"}},
    # The paper's plain-text format (no chat template), with its chain of thought.
    "compare_plain": {
        "type": "compare",
        "params": {
            "swap": True,
            "chain_of_thought": True,
            "few_shot": False,
            "feedback_template": "paper-plain",
        },
        "supplied": True,
    },
}


@dataclass
class RealRun:
    stack: Stack
    model: str
    revision: str
    worker: subprocess.Popen[bytes]
    jobs: dict[str, dict[str, Any]]
    labels: dict[str, list[Label]]
    seconds: float


@pytest.fixture(scope="class")
def real_run(
    tmp_path_factory: pytest.TempPathFactory,
    database_url: str,
    broker_url: str | None,
    db: Engine,
    api_key: str,
) -> Iterator[RealRun]:
    """One transformers worker per backend runs every job type, so SmolLM2 loads once.

    The model is served under a name of this run's own (an alias of the prepared
    SmolLM2 directory), so its queue is private like the scripted tests' queues.
    """
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    from charter.model_store import model_revision, prepare_smollm2

    smollm2 = prepare_smollm2(MODELS_DIR / "smollm2")
    tmp = tmp_path_factory.mktemp("real")
    model = f"smollm2-{secrets.token_hex(4)}"
    settings = base_settings(
        tmp / "data",
        database_url,
        broker_url,
        worker_engine="transformers",
        models={model: str(smollm2)},
    )
    stack = Stack(settings, api_key, db, tmp)
    stack.models.append(model)
    started = time.monotonic()
    worker: subprocess.Popen[bytes] | None = None
    try:
        stack.open()
        worker = stack.start_worker([model])
        plain = stack.client.create_batch(REAL_PROMPTS, name="plain")
        supplied = stack.client.create_batch(SUPPLIED, name="supplied")
        jobs = {}
        for name, spec in REAL_JOBS.items():
            jobs[name] = stack.client.submit_job(
                type=spec["type"],
                batch_id=(supplied if spec.get("supplied") else plain)["id"],
                constitution=stack.constitution()["ref"],
                model=model,
                params={**spec["params"], "sampling": SAMPLING},
                seed=2022,
                chunk_size=spec.get("chunk_size", 3),
            )
        for name, job in jobs.items():
            jobs[name] = stack.wait(job["id"], timeout=REAL_MODEL_TIMEOUT)
        seconds = time.monotonic() - started
        labels = {name: stack.labels(job["id"]) for name, job in jobs.items()}
        yield RealRun(stack, model, model_revision(smollm2), worker, jobs, labels, seconds)
    finally:
        print(f"real-model jobs took {time.monotonic() - started:.0f} s")
        for pid in child_pids(worker.pid) if worker is not None else []:
            print(f"worker pool process {pid} used {cpu_seconds(pid):.0f} CPU s")
        print(stack.tails())
        stack.close()


def check_provenance(run: RealRun, name: str, principles: int) -> list[Label]:
    job = run.jobs[name]
    states = run.stack.assert_exactly_once(job["id"], len(REAL_PROMPTS))
    labels = run.labels[name]
    assert labels, f"{name}: no labels at all ({states})"
    worker_ids = {w["id"] for w in run.stack.client.workers()}
    attempts = {i.id: i.attempt for i in run.stack.items(job["id"])}
    for label in labels:
        assert label.kind == job["type"]
        assert label.constitution_ref == run.stack.constitution()["ref"]
        assert len(label.principle_ids) == principles and all(label.principle_ids)
        assert label.model == run.model
        assert label.model_revision == run.revision
        assert label.engine == "transformers"
        template = feedback_template(JobType(job["type"]), JobParams(**REAL_JOBS[name]["params"]))
        assert label.template_hash == prompts.template_hash(template)
        assert label.template_version == prompts.template_version(template)
        assert label.job_params["sampling"] == SAMPLING
        assert label.job_params == {**label.job_params, **REAL_JOBS[name]["params"]}
        assert label.seed == 2022
        assert label.worker_id in worker_ids
        assert label.attempt >= 1 and label.attempt == attempts[label.work_item_id]
        assert label.timings["total"] > 0 and label.timings["batch_items"] in (1, 2, 3)
    return labels


@pytest.mark.slow
class TestRealModel:
    def test_worker_is_listed_with_its_model(self, real_run: RealRun) -> None:
        workers = [w for w in real_run.stack.client.workers() if real_run.model in w["models"]]
        assert len(workers) == 1, workers
        worker = workers[0]
        assert worker["engine"] == "transformers" and worker["models"] == [real_run.model]
        # The pool child of the worker process loads the engine and registers itself.
        assert worker["pid"] in child_pids(real_run.worker.pid)
        assert worker["items_done"] >= sum(len(v) for v in real_run.labels.values())
        print(f"all real-model jobs: {real_run.seconds:.0f} s")

    def test_sl_cai_two_rounds(self, real_run: RealRun) -> None:
        for label in check_provenance(real_run, "sl_cai", principles=2):
            assert label.response and label.completion
            assert [r["round"] for r in label.rounds] == [1, 2]
            assert label.completion == label.rounds[-1]["revision"]
            assert label.rounds[0]["critique"] and label.rounds[1]["critique"]

    def test_rl_cai_with_swap_records_both_orders(self, real_run: RealRun) -> None:
        for label in check_provenance(real_run, "rl_cai", principles=1):
            assert label.response_a and label.response_b
            assert label.p_a_forward is not None and label.p_a_swapped is not None
            assert label.p_a == pytest.approx((label.p_a_forward + label.p_a_swapped) / 2)
            assert label.swap_disagreement in (True, False)
            assert len(label.choice_logprobs["forward"]) == 2
            assert len(label.choice_logprobs["swapped"]) == 2
            assert 0.0 < label.choice_mass <= 1.0 and label.reasoning is None

    def test_rl_cai_chain_of_thought_is_clamped(self, real_run: RealRun) -> None:
        for label in check_provenance(real_run, "rl_cai_cot", principles=1):
            assert 0.40 <= label.p_a <= 0.60
            assert label.reasoning["forward"] and label.reasoning["swapped"]
            mean = (label.p_a_forward + label.p_a_swapped) / 2
            assert label.p_a == pytest.approx(min(max(mean, 0.40), 0.60))
            assert label.response_a == SUPPLIED[0]["response_a"]

    def test_critique_of_a_supplied_response(self, real_run: RealRun) -> None:
        for label in check_provenance(real_run, "critique", principles=1):
            assert label.response == SUPPLIED[0]["response"]
            assert len(label.rounds) == 1 and label.rounds[0]["revision"] is None
            assert label.completion == label.rounds[0]["critique"]

    def test_revision_of_a_supplied_response(self, real_run: RealRun) -> None:
        for label in check_provenance(real_run, "revise", principles=1):
            assert label.response == SUPPLIED[0]["response"]
            assert label.completion == label.rounds[0]["revision"] and label.completion

    def test_compare_of_supplied_pairs(self, real_run: RealRun) -> None:
        for label in check_provenance(real_run, "compare", principles=1):
            assert (label.response_a, label.response_b) == (
                SUPPLIED[0]["response_a"],
                SUPPLIED[0]["response_b"],
            )
            assert label.p_a_forward is not None and label.p_a_swapped is not None

    def test_generate_answers_each_prompt_and_a_told_constitution_changes_them(
        self, real_run: RealRun
    ) -> None:
        plain = check_provenance(real_run, "generate", principles=0)
        told = check_provenance(real_run, "generate_told", principles=0)
        for label in plain + told:
            assert label.completion and label.response is None and label.rounds is None
            assert label.sampling_hash and label.p_a is None
        by_prompt = {label.prompt_id: label.completion for label in plain}
        assert len(by_prompt) == len(REAL_PROMPTS) == len(told)
        # The same seed and sampling: only the system prompt differs between the two.
        assert {label.prompt_id: label.completion for label in told} != by_prompt

    def test_compare_in_the_papers_plain_format_is_faithful(self, real_run: RealRun) -> None:
        """Re-scored by plain transformers on the text alone (no chat template, no Charter
        engine code), each stored order gives the stored P(A) within 1e-5."""
        import torch
        import yaml
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from charter.core.constitution import Constitution
        from charter.core.feedback_templates import PLAIN
        from charter.model_store import prepare_smollm2

        path = prepare_smollm2(MODELS_DIR / "smollm2")
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
        root = Path(__file__).resolve().parents[2]
        document = yaml.safe_load((root / "constitutions" / "default.yaml").read_text())
        constitution = Constitution.model_validate(document)
        special = tuple(tokenizer.all_special_tokens)
        labels = check_provenance(real_run, "compare_plain", principles=1)
        for label in labels:
            assert label.template_version.endswith("/paper-plain")
            principle = constitution.comparison_principle(label.principle_ids[0])
            for order, (a, b), stored in (
                ("forward", (label.response_a, label.response_b), label.p_a_forward),
                ("swapped", (label.response_b, label.response_a), 1 - label.p_a_swapped),
            ):
                text = prompts.feedback_conversation(
                    constitution, principle, label.conversation, a, b,
                    chain_of_thought=True, few_shot=False, special=special, template=PLAIN,
                )[0]["content"]  # fmt: skip
                text += prompts.cot_answer_prefix(label.reasoning[order], special, PLAIN)
                ids = tokenizer(text, return_tensors="pt", split_special_tokens=True).input_ids
                with torch.inference_mode():
                    logits = model(input_ids=ids).logits[0, -1].float()
                lp = torch.log_softmax(logits, dim=-1)
                la, lb = (float(lp[tokenizer.convert_tokens_to_ids(x)]) for x in "AB")
                expected = math.exp(la) / (math.exp(la) + math.exp(lb))
                assert stored == pytest.approx(expected, abs=1e-5), (order, label.id)


@pytest.mark.slow
def test_a_worker_serves_a_training_runs_policy_as_run_id(
    make_stack: Callable[..., Stack], db: Engine
) -> None:
    """A completed run's artifact in the artifact store, served by a real worker that
    lists ``run:<id>``: the gateway takes jobs for it once the worker announces it."""
    pytest.importorskip("transformers")
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from charter.model_store import model_revision, prepare_smollm2

    stack = make_stack()
    with session_factory(db)() as session, session.begin():
        run = TrainingRun(
            project_id=ensure_project(session, "e2e").id, type="sft", config={}, status="completed"
        )
        session.add(run)
        session.flush()
        run_id = run.id
    artifact = stack.settings.artifacts_dir.resolve() / "runs" / run_id / "model"
    tokenizer = AutoTokenizer.from_pretrained(prepare_smollm2(MODELS_DIR / "smollm2"))
    torch.manual_seed(0)
    policy = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
            eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
        )
    )  # fmt: skip
    policy.save_pretrained(artifact)
    tokenizer.save_pretrained(artifact)
    with session_factory(db)() as session, session.begin():
        session.get_one(TrainingRun, run_id).artifact_uri = artifact.as_uri()
    model = f"run:{run_id}"
    stack.models.append(model)  # its queue is forgotten at the end
    stack.start_worker([model], worker_engine="transformers")
    deadline = time.monotonic() + REAL_MODEL_TIMEOUT
    while not any(model in w["models"] for w in stack.client.workers()):
        assert time.monotonic() < deadline, stack.tails()
        time.sleep(0.5)
    batch = stack.client.create_batch(rows(3))
    job = stack.client.submit_job(
        type="generate", batch_id=batch["id"], constitution=stack.constitution()["ref"],
        model=model, params={"sampling": {"max_tokens": 6}}, chunk_size=3,
    )  # fmt: skip
    assert stack.wait(job["id"], timeout=REAL_MODEL_TIMEOUT)["status"] == "completed"
    labels = stack.labels(job["id"])
    assert len(labels) == 3 and {label.kind for label in labels} == {"generate"}
    assert {(label.model, label.model_revision, label.engine) for label in labels} == {
        (model, model_revision(artifact), "transformers")
    }


# --------------------------------------------------------------------------- 2. SIGKILL


ITEMS = 300
"""Items per fault job: enough that chunks are queued, running and done when it hits."""


def record(stack: Stack, fault: str, job_id: str, items: int, since: float) -> None:
    """The fault matrix's row for this test (docs/RELIABILITY.md): its counts, asserted."""
    postgres = _is_postgres(stack.settings.effective_database_url)
    record_fault(
        fault,
        stack.tally({job_id: items}, shared_database=True),  # one database per module
        recover_seconds=time.monotonic() - since,
        stack="postgres+redis" if postgres else "sqlite+filesystem broker",
    )


def held_when_killed(stack: Stack, job_id: str, owner: str) -> set[int]:
    """The items a killed process held: still running under its lease (none can end
    before the lease expires, since their owner is dead)."""
    time.sleep(0.5)
    held = {i.id for i in stack.items(job_id) if i.status == "running" and i.lease_owner == owner}
    assert held, f"{owner} held no item when it was killed"
    return held


def test_sigkill_of_the_pool_child_loses_nothing(stack: Stack) -> None:
    model = stack.new_model()
    worker = stack.start_worker([model], fault_delay_seconds=0.3)
    job = stack.submit(rows(ITEMS, response=True), model, type="critique", chunk_size=10)
    owner = stack.wait_running(job["id"])[0].lease_owner  # "host:pid" of the pool child
    pid = int(owner.rsplit(":", 1)[1])
    assert pid in child_pids(worker.pid), "the lease holder is the worker's pool child"
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    held = held_when_killed(stack, job["id"], owner)

    stack.wait(job["id"])
    record(stack, "worker pool child SIGKILL mid-chunk", job["id"], ITEMS, killed)
    assert stack.assert_exactly_once(job["id"], ITEMS) == {"done": ITEMS}
    assert worker.poll() is None, "the worker main process outlived its pool child"
    assert pid not in child_pids(worker.pid) and child_pids(worker.pid), "a new child serves"
    retried = [lbl for lbl in stack.labels(job["id"]) if lbl.work_item_id in held]
    assert len(retried) == len(held)
    assert all(lbl.attempt >= 2 and lbl.worker_id != owner for lbl in retried)


def test_sigkill_of_the_whole_worker_then_a_fresh_one(stack: Stack) -> None:
    model = stack.new_model()
    first = stack.start_worker([model], fault_delay_seconds=0.3)
    job = stack.submit(rows(ITEMS, response=True), model, type="critique", chunk_size=10)
    owner = stack.wait_running(job["id"])[0].lease_owner
    kill_group(first)  # the main process and its pool child at once
    killed = time.monotonic()
    assert child_pids(first.pid) == []
    held = held_when_killed(stack, job["id"], owner)
    stack.start_worker([model], fault_delay_seconds=0.3)

    stack.wait(job["id"])
    record(stack, "whole worker SIGKILL mid-chunk, then a fresh worker", job["id"], ITEMS, killed)
    assert stack.assert_exactly_once(job["id"], ITEMS) == {"done": ITEMS}
    labels = stack.labels(job["id"])
    assert all(lbl.worker_id != owner for lbl in labels if lbl.work_item_id in held)
    assert all(lbl.attempt >= 2 for lbl in labels if lbl.work_item_id in held)
    assert len([lbl for lbl in labels if lbl.work_item_id in held]) == len(held)


# --------------------------------------------------------------------------- 3. duplicates


def test_duplicate_deliveries_make_one_label_per_item(stack: Stack) -> None:
    model = stack.new_model()
    job = stack.submit(rows(ITEMS), model, type="sl_cai", chunk_size=10)
    # Two more copies of every chunk's message, queued before any worker exists, so
    # the two pool processes below receive copies of the same chunk at the same time.
    producer = make_celery(stack.settings, name="duplicate-producer")
    try:
        for _ in range(2):
            for chunk in range(job["chunk_count"]):
                publish_chunk(producer, job["id"], chunk, model)
    finally:
        producer.close()
    started = time.monotonic()
    stack.start_worker([model], concurrency=2, fault_delay_seconds=0.1)

    stack.wait(job["id"])
    record(stack, "every chunk delivered three times", job["id"], ITEMS, started)
    assert stack.assert_exactly_once(job["id"], ITEMS) == {"done": ITEMS}
    # No copy ran an item a second time: nothing crashed, so every label is a first attempt.
    assert [lbl.attempt for lbl in stack.labels(job["id"])] == [1] * ITEMS


# --------------------------------------------------------------------------- 4. poison


def test_poison_item_that_kills_its_process_fails_alone(stack: Stack) -> None:
    model = stack.new_model()
    worker = stack.start_worker([model], fault_poison="POISON", fault_poison_mode="exit")
    batch = rows(ITEMS)
    batch[2] = {"prompt": "POISON: this prompt kills whichever process touches it"}
    started = time.monotonic()
    job = stack.submit(batch, model, type="sl_cai", chunk_size=10)

    stack.wait(job["id"])
    record(stack, "poison item kills its process every time", job["id"], ITEMS, started)
    assert stack.assert_exactly_once(job["id"], ITEMS) == {"done": ITEMS - 1, "failed": 1}
    failed = [i for i in stack.items(job["id"]) if i.status == "failed"]
    assert failed[0].attempt == 3
    assert "gave up after 3 attempts" in failed[0].last_error
    assert "expired" in failed[0].last_error  # the process died: its lease ran out

    assert worker.poll() is None, "the worker main process survived its children's deaths"
    after = stack.submit(rows(3, " again"), model, type="sl_cai", chunk_size=2)
    stack.wait(after["id"])
    assert stack.assert_exactly_once(after["id"], 3) == {"done": 3}


# --------------------------------------------------------------------------- 5. broker outage


@pytest.mark.postgres_only
def test_broker_outage_at_submission_is_repaired_by_the_sweeper(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(gateway_broker_url=DEAD_BROKER, sweeper=False)
    model = stack.new_model()
    batch = stack.client.create_batch(rows(ITEMS), name="outage")
    spec = {
        "type": "sl_cai",
        "batch_id": batch["id"],
        "constitution": stack.constitution()["ref"],
        "model": model,
        "chunk_size": 10,
    }
    started = time.monotonic()
    response = httpx.post(
        f"{stack.gateway.url}/v1/jobs", json=spec, headers={"X-API-Key": stack.key}, timeout=120
    )
    assert response.status_code == 202, response.text
    assert time.monotonic() - started < 60
    job = response.json()
    items = stack.items(job["id"])
    assert [i.status for i in items] == ["queued"] * ITEMS
    assert all(i.published_at is None for i in items), "nothing could have been published"

    stack.start_worker([model])
    time.sleep(2)
    assert stack.client.job(job["id"])["counts"]["queued"] == ITEMS  # no message for the worker
    healed = time.monotonic()
    stack.start_sweeper()  # the sweeper reaches the real Redis and publishes the outbox
    stack.wait(job["id"])
    record(stack, "broker unreachable at submission", job["id"], ITEMS, healed)
    assert stack.assert_exactly_once(job["id"], ITEMS) == {"done": ITEMS}
