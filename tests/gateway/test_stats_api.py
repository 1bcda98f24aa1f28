"""``/v1/stats``: the dashboard's numbers equal the ones computed by hand from a judge
whose position and length bias the test sets, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update

from charter.core import prompts
from charter.core.engine import ChoiceLogprobs, Conversation
from charter.db.models import Job, Label, Worker, WorkItem, utcnow
from charter.db.session import session_factory
from workers.engines.scripted import ScriptedEngine
from workers.runner import ChunkRunner

Z = 1.959963984540054
K = 0.004
"""The judge's length slope: P(first) moves by K per character of length difference."""
# Per pair: (len_a, len_b, base), base = the judge's P(first wins) at equal lengths;
# base +- K * |len_a - len_b| stays inside (0, 1).
PAIRS = [
    (70, 100, 0.20),
    (40, 100, 0.30),
    (50, 50, 0.25),
    (110, 100, 0.35),
    (130, 100, 0.30),
    (160, 100, 0.30),
    (90, 120, 0.40),
    (100, 100, 0.10),  # abstains: the judge puts too little mass on A and B
]
ABSTAINS = {7}


def _a(i: int) -> str:
    return f"@a{i}@" + "x" * (PAIRS[i][0] - len(f"@a{i}@"))


def _b(i: int) -> str:
    return f"@b{i}@" + "y" * (PAIRS[i][1] - len(f"@b{i}@"))


def judge(conversation: Conversation, prefix: str, choices: tuple[str, str]) -> ChoiceLogprobs:
    """P(first) = base + K * (len(first) - len(second)), mass 0.9 (0.2 to abstain)."""
    text = conversation[-1]["content"]
    for i, (_, _, base) in enumerate(PAIRS):
        at_a, at_b = text.find(f"@a{i}@"), text.find(f"@b{i}@")
        if at_a >= 0 and at_b >= 0:
            first, second = (_a(i), _b(i)) if at_a < at_b else (_b(i), _a(i))
            p = base + K * (len(first) - len(second))
            mass = 0.2 if i in ABSTAINS else 0.9
            return ChoiceLogprobs(a=math.log(mass * p), b=math.log(mass * (1 - p)))
    raise AssertionError("no known pair in the feedback prompt")


def _wilson(k: int, n: int) -> tuple[float, float]:
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return max(centre - half, 0.0), min(centre + half, 1.0)


def _run(engine: Engine, settings: Any, job: dict[str, Any], **engine_kw: Any) -> None:
    engines = {"m": ScriptedEngine(model_name="m", **engine_kw)}
    runner = ChunkRunner(session_factory(engine), engines, settings, "w-test")
    for chunk in range(job["chunk_count"]):
        runner.run_chunk(job["id"], chunk)


@pytest.fixture
def alpha(api: Any, make_headers: Any) -> dict[str, str]:
    headers = make_headers("alpha", "admin")
    api.push_default(headers)
    return headers


@pytest.fixture
def compare_job(api: Any, alpha: dict[str, str], engine: Engine, settings: Any) -> dict[str, Any]:
    rows = [
        {"prompt": f"prompt {i}", "response_a": _a(i), "response_b": _b(i)}
        for i in range(len(PAIRS))
    ]
    batch = api.create_batch(alpha, rows, "pairs")
    job = api.submit(alpha, type="compare", batch_id=batch["id"], model="m", chunk_size=3)
    _run(engine, settings, job, choice_fn=judge)
    return job


def _expected_pairs() -> list[dict[str, float]]:
    """Each labelled pair as labels.combine stores it, from the judge's definition."""
    out = []
    for i, (la, lb, base) in enumerate(PAIRS):
        if i in ABSTAINS:
            continue
        d = la - lb
        forward = base + K * d  # A first
        swapped = 1 - (base - K * d)  # B first: P(A) = 1 - P(first)
        out.append(
            {
                "i": i,
                "p_a": (forward + swapped) / 2,
                "p_first": (forward + (1 - swapped)) / 2,
                "d": d,
                "disagree": (forward - 0.5) * (swapped - 0.5) < 0,
            }
        )
    return out


def test_job_stats_equal_the_hand_computed_bias(
    client: TestClient, alpha: dict[str, str], compare_job: dict[str, Any]
) -> None:
    response = client.get(f"/v1/stats/jobs/{compare_job['id']}", headers=alpha)
    assert response.status_code == 200, response.text
    stats = response.json()
    pairs = _expected_pairs()
    n = len(pairs)
    assert stats["type"] == "compare" and stats["status"] == "completed"
    assert stats["counts"]["done"] == n and stats["counts"]["abstained"] == len(ABSTAINS)
    assert stats["labels"] == n and stats["sampled"] is False
    assert stats["abstentions"] == [
        {"reason": "A/B probability mass # below threshold #", "count": len(ABSTAINS)}
    ]
    assert stats["failures"] == []
    assert stats["eta_seconds"] == 0.0
    assert stats["timeline"][-1]["count"] == len(PAIRS)  # done + abstained
    assert stats["principle_draws"] is None and stats["chains"] == []

    judge_stats = stats["judge"]
    assert judge_stats["n"] == n
    assert judge_stats["mean_p_a"] == pytest.approx(sum(p["p_a"] for p in pairs) / n)

    # Position bias: P(first) is the judge's base at each pair; mean +- 1.96 s / sqrt(n).
    bases = [PAIRS[p["i"]][2] for p in pairs]
    assert [p["p_first"] for p in pairs] == pytest.approx(bases)
    mean, sd = statistics.fmean(bases), statistics.stdev(bases)
    position = judge_stats["position_bias"]
    assert position["value"] == pytest.approx(mean)
    assert position["low"] == pytest.approx(mean - Z * sd / math.sqrt(n))
    assert position["high"] == pytest.approx(mean + Z * sd / math.sqrt(n))
    assert position["n"] == n
    assert position["high"] < 0.5  # this judge prefers the second response

    # Length bias: the longer response always wins; the label is linear in d: r = 1.
    length = judge_stats["length_bias"]
    decided = [p for p in pairs if p["d"] != 0]
    assert length["longer_wins"]["value"] == 1.0
    assert length["longer_wins"]["n"] == len(decided)
    assert (length["longer_wins"]["low"], length["longer_wins"]["high"]) == pytest.approx(
        _wilson(len(decided), len(decided))
    )
    assert length["length_ties"] == n - len(decided) and length["label_ties"] == 0
    assert length["correlation"] == pytest.approx(1.0)
    assert length["correlation_n"] == n

    disagree = sum(p["disagree"] for p in pairs)
    swap = judge_stats["swap_disagreement"]
    assert swap["value"] == pytest.approx(disagree / n) and swap["n"] == n
    assert (swap["low"], swap["high"]) == pytest.approx(_wilson(disagree, n))

    histogram = judge_stats["histogram"]
    assert len(histogram) == 10 and sum(b["count"] for b in histogram) == n
    expected_bins = Counter(min(int(p["p_a"] * 10), 9) for p in pairs)
    assert [b["count"] for b in histogram] == [expected_bins.get(k, 0) for k in range(10)]

    # Per principle: the same statistics over the pairs that drew each principle.
    results = client.get(f"/v1/jobs/{compare_job['id']}/results", headers=alpha).json()["items"]
    by: dict[str, list[float]] = defaultdict(list)
    for r in results:  # the row's prompt is "prompt {i}"
        i = int(r["conversation"][-1]["content"].removeprefix("prompt "))
        by[r["principle_ids"][0]].append(PAIRS[i][2])
    assert set(stats["by_principle"]) == set(by)
    for principle, values in by.items():
        got = stats["by_principle"][principle]
        assert got["n"] == len(values)
        assert got["position_bias"]["value"] == pytest.approx(statistics.fmean(values))


def test_models_summarise_the_judge_across_jobs(
    client: TestClient, alpha: dict[str, str], compare_job: dict[str, Any], make_headers: Any
) -> None:
    response = client.get("/v1/stats/models", headers=alpha)
    assert response.status_code == 200, response.text
    models = response.json()
    pairs = _expected_pairs()
    assert len(models) == 1
    (model,) = models
    assert (model["model"], model["template_version"]) == ("m", prompts.TEMPLATE_VERSION)
    assert (model["jobs"], model["labels"], model["sampled"]) == (1, len(pairs), False)
    bases = [PAIRS[p["i"]][2] for p in pairs]
    assert model["judge"]["position_bias"]["value"] == pytest.approx(statistics.fmean(bases))
    assert model["judge"]["length_bias"]["longer_wins"]["value"] == 1.0

    beta = make_headers("beta", "read")
    assert client.get("/v1/stats/models", headers=beta).json() == []


def test_another_project_sees_none_of_it(
    client: TestClient, alpha: dict[str, str], compare_job: dict[str, Any], make_headers: Any
) -> None:
    beta = make_headers("beta", "read")
    missing = client.get(f"/v1/stats/jobs/{compare_job['id']}", headers=beta)
    assert missing.status_code == 404, missing.text
    assert missing.json()["field"] == "job_id"
    assert compare_job["id"] in missing.json()["detail"]
    overview = client.get("/v1/stats/overview", headers=beta).json()
    assert overview["queue"] == [] and overview["finished_items"] == 0
    assert sum(m["count"] for m in overview["labels_per_minute"]) == 0
    assert overview["outbox_backlog"] == 0 and overview["stuck"]["unserved_jobs"] == []
    mine = client.get("/v1/stats/overview", headers=alpha).json()
    assert sum(m["count"] for m in mine["labels_per_minute"]) == len(_expected_pairs())


def test_overview_queues_rates_backlog_and_stuck(
    api: Any,
    client: TestClient,
    alpha: dict[str, str],
    compare_job: dict[str, Any],
    engine: Engine,
    settings: Any,
) -> None:
    rows = [{"prompt": f"waiting {i}", "response_a": "x", "response_b": "yy"} for i in range(6)]
    batch = api.create_batch(alpha, rows, "waiting")
    waiting = api.submit(alpha, type="compare", batch_id=batch["id"], model="m", chunk_size=2)
    now = utcnow()
    with session_factory(engine)() as session, session.begin():
        items = list(
            session.scalars(
                select(WorkItem).where(WorkItem.job_id == waiting["id"]).order_by(WorkItem.id)
            )
        )
        # Item 0 is leased, and its lease ran out; chunk 2 (items 4, 5) was never published.
        items[0].status, items[0].lease_expires_at = "running", now - timedelta(minutes=1)
        session.execute(
            update(WorkItem)
            .where(WorkItem.id.in_([items[4].id, items[5].id]))
            .values(published_at=None)
        )
        # One finished item of the labelled job failed instead.
        done = session.scalars(
            select(WorkItem).where(WorkItem.job_id == compare_job["id"], WorkItem.status == "done")
        ).first()
        assert done is not None
        done.status, done.last_error = "failed", "gave up after 3 attempts; last error: boom 42"

    overview = client.get("/v1/stats/overview?hours=2", headers=alpha)
    assert overview.status_code == 200, overview.text
    body = overview.json()
    assert body["hours"] == 2
    assert len(body["labels_per_minute"]) in (121, 122)  # every minute of the window
    assert {(q["model"], q["state"]): q["count"] for q in body["queue"]} == {
        ("m", "queued"): 5,
        ("m", "running"): 1,
    }
    finished = len(PAIRS)
    assert body["finished_items"] == finished
    assert body["failure_rate"]["value"] == pytest.approx(1 / finished)
    assert body["abstention_rate"]["value"] == pytest.approx(len(ABSTAINS) / finished)
    assert (body["failure_rate"]["low"], body["failure_rate"]["high"]) == pytest.approx(
        _wilson(1, finished)
    )
    assert body["outbox_backlog"] == 1
    assert body["stuck"]["expired_leases"] == 1
    assert [j["job_id"] for j in body["stuck"]["unserved_jobs"]] == [waiting["id"]]
    assert body["workers"] == []

    with session_factory(engine)() as session, session.begin():
        session.add(Worker(id="h:1", hostname="h", pid=1, engine="scripted", models=["m"]))
        session.add(Worker(id="h:2", hostname="h", pid=2, engine="scripted", models=["other"]))
        session.add(
            Worker(
                id="h:3",
                hostname="h",
                pid=3,
                engine="scripted",
                models=["m"],
                last_seen=now - timedelta(hours=1),
            )
        )
    body = client.get("/v1/stats/overview", headers=alpha).json()
    assert body["stuck"]["unserved_jobs"] == []
    assert [w["id"] for w in body["workers"]] == ["h:1"]  # live, and serving a model in use

    stats = client.get(f"/v1/stats/jobs/{compare_job['id']}", headers=alpha).json()
    assert stats["failures"] == [
        {"reason": "gave up after # attempts; last error: boom #", "count": 1}
    ]
    assert stats["counts"]["failed"] == 1
    assert stats["labels"] == len(_expected_pairs())


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/v1/stats/overview?hours=0", "query.hours"),
        ("/v1/stats/overview?hours=169", "query.hours"),
        ("/v1/stats/overview?hours=six", "query.hours"),
        ("/v1/stats/jobs/x?chains=-1", "query.chains"),
        ("/v1/stats/jobs/x?chains=51", "query.chains"),
    ],
)
def test_bad_query_is_422_naming_the_field(
    client: TestClient, alpha: dict[str, str], url: str, field: str
) -> None:
    response = client.get(url, headers=alpha)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


def test_sl_cai_draws_and_chains_in_round_order(
    api: Any, client: TestClient, alpha: dict[str, str], engine: Engine, settings: Any
) -> None:
    batch = api.create_batch(alpha, [{"prompt": f"question {i}"} for i in range(4)], "sl")
    job = api.submit(
        alpha, type="sl_cai", batch_id=batch["id"], model="m", params={"rounds": 3}, seed=7
    )
    _run(engine, settings, job)
    stats = client.get(f"/v1/stats/jobs/{job['id']}?chains=2", headers=alpha)
    assert stats.status_code == 200, stats.text
    body = stats.json()
    assert body["judge"] is None and body["by_principle"] == {}
    results = client.get(f"/v1/jobs/{job['id']}/results", headers=alpha).json()["items"]
    assert len(results) == 4
    drawn = Counter(p for r in results for p in r["principle_ids"])
    assert body["principle_draws"] == dict(drawn)
    assert sum(body["principle_draws"].values()) == 4 * 3
    assert len(body["chains"]) == 2
    by_id = {r["id"]: r for r in results}
    for chain in body["chains"]:
        label = by_id[chain["label_id"]]
        assert [r["round"] for r in chain["rounds"]] == [1, 2, 3]
        assert [r["principle_id"] for r in chain["rounds"]] == label["principle_ids"]
        assert [r["critique"] for r in chain["rounds"]] == [r["critique"] for r in label["rounds"]]
        assert chain["rounds"][-1]["revision"] == chain["completion"] == label["completion"]
        assert chain["response"] == label["response"]
        assert chain["conversation"] == label["conversation"]


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def test_timeline_and_throughput_from_controlled_times(
    api: Any, client: TestClient, alpha: dict[str, str], engine: Engine
) -> None:
    rows = [{"prompt": f"t {i}", "response_a": "x", "response_b": "yy"} for i in range(6)]
    batch = api.create_batch(alpha, rows, "timeline")
    job = api.submit(alpha, type="compare", batch_id=batch["id"], model="m", chunk_size=2)
    base = _minute(utcnow()) - timedelta(minutes=10)
    finished_at = [timedelta(minutes=1, seconds=5), timedelta(minutes=2, seconds=10)]
    finished_at.append(timedelta(minutes=2, seconds=40))
    with session_factory(engine)() as session, session.begin():
        session.execute(update(Job).where(Job.id == job["id"]).values(created_at=base))
        items = session.scalars(
            select(WorkItem).where(WorkItem.job_id == job["id"]).order_by(WorkItem.id)
        ).all()
        for item, offset, state in zip(
            items, finished_at, ("done", "failed", "abstained"), strict=False
        ):
            item.status, item.updated_at = state, base + offset
    body = client.get(f"/v1/stats/jobs/{job['id']}", headers=alpha).json()
    assert body["bucket_seconds"] == 60
    timeline = [(datetime.fromisoformat(p["minute"]), p["count"]) for p in body["timeline"]]
    # Bucket k covers [base + k min, base + (k + 1) min); its count holds at its end.
    assert timeline[:4] == [
        (base + timedelta(minutes=1), 0),
        (base + timedelta(minutes=2), 1),
        (base + timedelta(minutes=3), 3),
        (base + timedelta(minutes=4), 3),
    ]
    assert all(count == 3 for _, count in timeline[3:])
    assert len(timeline) in (11, 12)  # to the minute in progress (it may have turned)
    # Throughput over the last 15 minutes, here the whole timeline: from the first point
    # (count 0 at base + 1 min) to the last (now), 3 items; 3 items left.
    end = timeline[-1][0]
    assert end <= utcnow()
    rate = 3 / ((end - (base + timedelta(minutes=1))).total_seconds() / 60)
    assert body["items_per_minute"] == pytest.approx(rate)
    assert body["eta_seconds"] == pytest.approx(3 / rate * 60)
    assert body["counts"] == {
        "queued": 3,
        "running": 0,
        "done": 1,
        "abstained": 1,
        "failed": 1,
        "cancelled": 0,
    }


def test_labels_per_minute_buckets(
    client: TestClient, alpha: dict[str, str], compare_job: dict[str, Any], engine: Engine
) -> None:
    now = utcnow()
    recent, old = _minute(now) - timedelta(minutes=5), now - timedelta(hours=3)
    with session_factory(engine)() as session, session.begin():
        labels = session.scalars(select(Label).where(Label.job_id == compare_job["id"])).all()
        for i, label in enumerate(labels):
            label.created_at = recent + timedelta(seconds=59) if i < 2 else old
    body = client.get("/v1/stats/overview?hours=2", headers=alpha).json()
    counts = {datetime.fromisoformat(m["minute"]): m["count"] for m in body["labels_per_minute"]}
    assert counts[recent] == 2
    assert sum(counts.values()) == 2
    assert min(counts) == _minute(datetime.fromisoformat(body["now"]) - timedelta(hours=2))
    assert max(counts) == _minute(datetime.fromisoformat(body["now"]))
