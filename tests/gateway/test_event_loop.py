"""Big uploads are parsed and stored off the event loop: ``/healthz`` stays fast.

Against a real uvicorn server in a background thread (TestClient runs requests
one at a time, so it cannot show one request starving another): a ~20 MB JSONL
upload and a ~1 MB YAML constitution are sent from threads while another process
polls ``/healthz`` every 10 ms; 99% of the polls must answer within 200 ms and
none may take a second. Parsing
either body on the event loop (as the endpoints once did) stalls it for seconds.
"""

from __future__ import annotations

import gc
import json
import random
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import yaml

MAX_HEALTHZ_SECONDS = 0.2
MAX_STALL_SECONDS = 1.0
# Polls /healthz every 10 ms until its stdin closes, then prints [[answered_at, seconds], ...]
# (time.monotonic, which is one clock for every process). A process of its own, as a
# client is: polling from a thread of this one would time this process's GIL, not the server.
POLLER = """
import json, sys, threading, time, httpx
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
polls = []
with httpx.Client(base_url=sys.argv[1], timeout=30) as http:
    assert http.get("/healthz").status_code == 200
    print("ready", flush=True)
    while not stop.is_set():
        before = time.monotonic()
        assert http.get("/healthz").status_code == 200
        polls.append([time.monotonic(), time.monotonic() - before])
        time.sleep(0.01)
print(json.dumps(polls), flush=True)
"""
VOCABULARY = "the a model should explain how why constitution helps users ask about history é 🙂"


def _text(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append(rng.choice(VOCABULARY.split()))
    return " ".join(words)


def _jsonl(rows: int) -> bytes:
    rng = random.Random(7)
    lines = []
    for i in range(rows):
        if i % 5 == 0:
            row: dict[str, Any] = {"messages": [{"role": "user", "content": _text(rng, 300)}]}
        else:
            row = {"prompt": _text(rng, 300)}
        lines.append(json.dumps(row, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode()


def _big_constitution(default_yaml: bytes) -> bytes:
    """The default constitution with ~900 kB of metadata, as YAML (the slow parser)."""
    document = yaml.safe_load(default_yaml)
    rng = random.Random(8)
    document["name"] = "big"
    document["metadata"] = {f"note-{i}": [_text(rng, 40), i, i / 7] for i in range(12_000)}
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False).encode()


def test_healthz_answers_fast_while_big_uploads_are_parsed(
    live_server: Any,
    admin_headers: dict[str, str],
    default_yaml: bytes,
    record_property: Any,
) -> None:
    upload = _jsonl(60_000)
    constitution = _big_constitution(default_yaml)
    assert len(upload) > 20_000_000 and len(constitution) > 800_000
    requests = {
        "upload": (
            "/v1/batches/upload?name=big",
            upload,
            {**admin_headers, "Content-Type": "application/x-ndjson"},
        ),
        "constitution": (
            "/v1/constitutions",
            constitution,
            {**admin_headers, "Content-Type": "application/yaml"},
        ),
    }
    results: dict[str, Any] = {}
    finished: dict[str, float] = {}

    def send(name: str) -> None:
        path, body, headers = requests[name]
        try:
            with httpx.Client(base_url=live_server.url, timeout=300) as http:
                results[name] = http.post(path, content=body, headers=headers)
        except Exception as exc:  # reported by the assertions below
            results[name] = exc
        finally:
            finished[name] = time.monotonic()

    # The server shares this process with pytest and the test data: a full garbage
    # collection walks all of it (up to ~1 s late in a full test run, holding the GIL).
    # Freeze what exists now, as a server does after start-up (gc.freeze), so that
    # collections only walk what the requests allocate and the test measures the
    # requests, not the harness. Before the poller starts: a poll in flight during this
    # collection would otherwise answer after ``started`` and count the harness's pause.
    gc.collect()
    gc.freeze()
    try:
        poller = subprocess.Popen(
            [sys.executable, "-c", POLLER, live_server.url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert poller.stdin is not None and poller.stdout is not None
        try:
            assert poller.stdout.readline().strip() == "ready"
            senders = [threading.Thread(target=send, args=(name,)) for name in requests]
            started = time.monotonic()
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join()
        finally:
            output, _ = poller.communicate("", timeout=60)
    finally:
        gc.unfreeze()
    assert poller.returncode == 0, output
    polls: list[tuple[float, float]] = json.loads(output.strip().splitlines()[-1])
    for name in requests:
        response = results[name]
        assert isinstance(response, httpx.Response), response
        assert response.status_code == 201, (name, response.text[:500])
    assert results["upload"].json()["row_count"] == 60_000
    in_flight = [
        latency for answered, latency in polls if started < answered < min(finished.values())
    ]
    assert len(in_flight) >= 10, (len(in_flight), min(finished.values()) - started)
    worst = max(latency for answered, latency in polls if answered > started)
    record_property("healthz_max_latency_s", round(worst, 4))
    print(
        f"\nhealthz: {len(polls)} polls, {len(in_flight)} while both requests ran, "
        f"max {worst * 1000:.1f} ms; the big requests took {max(finished.values()) - started:.2f} s"
    )
    # Every poll while the big requests ran: 99% within 200 ms, none over 1 s. A full
    # garbage collection in the server process holds the GIL for a few hundred ms on a
    # loaded 2-core machine (seen once per run at most, and gone with gc disabled); a
    # request parsed or stored on the event loop stalls it for seconds (3.3 s before).
    latencies = sorted(latency for answered, latency in polls if answered > started)
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    assert p99 < MAX_HEALTHZ_SECONDS and worst < MAX_STALL_SECONDS, latencies[-5:]
