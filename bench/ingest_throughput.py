"""Prompt ingest: ``POST /v1/batches/upload`` against a raw PostgreSQL ``COPY``.

The same generated rows (deterministic: plain prompts of 50-400 characters, some with a
supplied response, chat messages, compare pairs) go into the same ``prompts`` table two
ways, alternately (lockstep) on a scratch database truncated before every run:

- **gateway**: the JSONL file streamed over HTTP to the gateway in its own uvicorn
  process (parsed strictly, validated, stored in one transaction);
- **copy**: the rows pre-rendered in COPY's text format, streamed by psycopg in 1 MiB
  blocks into ``COPY prompts (...) FROM STDIN`` in one transaction with its batch row:
  what PostgreSQL itself needs, with no parsing or validation on the client.

Each size gets a fresh gateway, so its peak RSS (VmHWM) belongs to that size alone.

    python bench/ingest_throughput.py --rows 10000,100000,1000000 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    DEFAULT_SERVER,
    ROOT,
    Gateway,
    admin_key,
    dsn,
    log,
    machine,
    plot,
    proc_cpu_seconds,
    scratch_database,
    write_result,
)

BLOCK = 1 << 20
COLUMNS = ("batch_id", "position", "prompt", "messages", "response", "response_a", "response_b")
COPY_BATCH_ID = "c0" * 16  # the COPY side's batch (ids are 32 characters)
WORDS = (
    *("the", "a", "of", "to", "and", "in", "is", "it", "that", "for", "on", "with", "as"),
    *("explain", "describe", "write", "summarise", "compare", "list", "give", "help"),
    *("history", "science", "river", "mountain", "bread", "recipe", "travel", "budget"),
    *("health", "privacy", "law", "ethics", "café", "naïve", "résumé", "東京", "данные"),
)
# Characters COPY and JSON must escape, once in a while.
ODD = ("\t", "\n", "\\", '"', "\\N", "🙂")


def _text(rng: random.Random, low: int, high: int) -> str:
    target = rng.randint(low, high)
    words: list[str] = []
    size = 0
    while size <= target:  # the joined words (size - 1 characters) reach target
        word = rng.choice(WORDS) if rng.random() > 0.02 else rng.choice(ODD)
        words.append(word)
        size += len(word) + 1
    text = " ".join(words)[:target]
    return text[:-1] + "." if text[-1].isspace() else text  # exactly ``target`` characters


def make_row(rng: random.Random) -> dict[str, Any]:
    """One upload row: 55% plain prompts, 15% with a response, 15% chat, 15% compare."""
    kind = rng.random()
    if kind < 0.15:
        turns = [{"role": "user", "content": _text(rng, 50, 400)}]
        for _ in range(rng.choice((0, 0, 1, 2))):
            turns += [
                {"role": "assistant", "content": _text(rng, 20, 200)},
                {"role": "user", "content": _text(rng, 20, 200)},
            ]
        if rng.random() < 0.3:
            turns.insert(0, {"role": "system", "content": _text(rng, 20, 80)})
        return {"messages": turns}
    row: dict[str, Any] = {"prompt": _text(rng, 50, 400)}
    if kind < 0.30:
        row["response"] = _text(rng, 50, 300)
    elif kind < 0.45:
        row["response_a"] = _text(rng, 50, 300)
        row["response_b"] = _text(rng, 50, 300)
    return row


def _copy_field(value: str | None) -> str:
    if value is None:
        return "\\N"
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def write_files(rows: int, folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """The JSONL upload and the same rows in COPY text format (with the COPY side's batch)."""
    jsonl, tsv = folder / f"rows-{rows}.jsonl", folder / f"rows-{rows}.tsv"
    rng = random.Random(seed)
    with jsonl.open("w", encoding="utf-8") as up, tsv.open("w", encoding="utf-8") as copy:
        for position in range(rows):
            row = make_row(rng)
            up.write(json.dumps(row, ensure_ascii=False) + "\n")
            messages = row.get("messages")
            fields = [
                COPY_BATCH_ID,
                str(position),
                row.get("prompt"),
                json.dumps(messages, ensure_ascii=False) if messages else None,
                row.get("response"),
                row.get("response_a"),
                row.get("response_b"),
            ]
            copy.write("\t".join(_copy_field(f) for f in fields) + "\n")
    return jsonl, tsv


def _blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while block := handle.read(BLOCK):
            yield block


def _backend_cpu(conn: psycopg.Connection[Any], database: str, own: int) -> float:
    """CPU seconds of the server processes serving ``database`` (the gateway's pool; the
    server runs on this machine), less ``own``, the asking session's."""
    pids = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> %s", (database, own)
    ).fetchall()
    total = 0.0
    for (pid,) in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # ended meanwhile
            total += proc_cpu_seconds(pid)
    return total


def _truncate(conn: psycopg.Connection[Any]) -> None:
    conn.execute("TRUNCATE prompts, prompt_batches CASCADE")  # every run starts empty


def _checksum(conn: psycopg.Connection[Any]) -> str:
    """Count and an order-free hash of every stored row's content, both sides alike."""
    row = conn.execute(
        "SELECT count(*), sum(hashtextextended(concat_ws(E'\\x1f', position, prompt, "
        "messages::text, response, response_a, response_b), 0)) FROM prompts"
    ).fetchone()
    assert row is not None
    return f"{row[0]}:{row[1]}"


def run_copy(url: str, tsv: Path, project_id: str) -> tuple[float, float]:
    """Wall seconds and the server process's CPU seconds of one COPY."""
    with psycopg.connect(dsn(url)) as conn:
        backend = conn.info.backend_pid
        cpu_before = proc_cpu_seconds(backend)
        started = time.perf_counter()
        with conn.transaction():
            conn.execute(
                "INSERT INTO prompt_batches (id, project_id, name, row_count, created_at) "
                "VALUES (%s, %s, 'copy', 0, now())",
                (COPY_BATCH_ID, project_id),
            )
            with conn.cursor().copy(f"COPY prompts ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for block in _blocks(tsv):
                    copy.write(block)
        return time.perf_counter() - started, proc_cpu_seconds(backend) - cpu_before


def run_gateway(gateway: Gateway, key: str, jsonl: Path, rows: int) -> float:
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/x-ndjson",
        "Content-Length": str(jsonl.stat().st_size),
    }
    started = time.perf_counter()
    response = httpx.post(
        f"{gateway.base}/v1/batches/upload",
        params={"name": f"bench-{rows}"},
        content=_blocks(jsonl),
        headers=headers,
        timeout=3600,
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 201 or response.json()["row_count"] != rows:
        raise RuntimeError(f"upload failed: {response.status_code} {response.text[:500]}")
    return elapsed


def measure(url: str, size: int, folder: Path, repeat: int, env: dict[str, str]) -> dict[str, Any]:
    jsonl, tsv = write_files(size, folder)
    key, project_id = admin_key(url)
    database = url.rsplit("/", 1)[-1]
    sides: dict[str, dict[str, list[float]]] = {
        s: {"seconds": [], "server_cpu_s": []} for s in ("gateway", "copy")
    }
    gateway_cpu: list[float] = []
    stored: set[str] = set()
    with psycopg.connect(dsn(url), autocommit=True) as admin, Gateway(url, folder, env=env) as gw:
        idle_kib = gw.memory("VmRSS")
        for turn in range(repeat):
            for side in ("gateway", "copy") if turn % 2 == 0 else ("copy", "gateway"):
                _truncate(admin)
                if side == "gateway":
                    server_before = _backend_cpu(admin, database, admin.info.backend_pid)
                    cpu_before = gw.cpu_seconds()
                    seconds = run_gateway(gw, key, jsonl, size)
                    gateway_cpu.append(gw.cpu_seconds() - cpu_before)
                    server = _backend_cpu(admin, database, admin.info.backend_pid) - server_before
                else:
                    seconds, server = run_copy(url, tsv, project_id)
                sides[side]["seconds"].append(seconds)
                stored.add(_checksum(admin))
                sides[side]["server_cpu_s"].append(round(server, 2))
                log(f"{size:>9} rows  {side:<7} {seconds:7.2f} s  {size / seconds:9.0f} rows/s")
        peak_kib = gw.memory("VmHWM")
    if len(stored) != 1 or not next(iter(stored)).startswith(f"{size}:"):
        raise RuntimeError(f"the two sides stored different rows: {stored}")
    gateway_s = statistics.median(sides["gateway"]["seconds"])
    copy_s = statistics.median(sides["copy"]["seconds"])
    per_turn = [
        c / g for g, c in zip(sides["gateway"]["seconds"], sides["copy"]["seconds"], strict=True)
    ]
    return {
        "rows": size,
        "jsonl_bytes": jsonl.stat().st_size,
        "stored_checksum": next(iter(stored)),
        "gateway_seconds": sides["gateway"]["seconds"],
        "copy_seconds": sides["copy"]["seconds"],
        "gateway_rows_per_s": round(size / gateway_s),
        "copy_rows_per_s": round(size / copy_s),
        "ratio_median": round(copy_s / gateway_s, 3),
        "ratio_per_turn": [round(r, 3) for r in per_turn],
        "gateway_cpu_us_per_row": round(statistics.median(gateway_cpu) / size * 1e6, 2),
        "gateway_idle_rss_mib": round(idle_kib / 1024, 1),
        "gateway_peak_rss_mib": round(peak_kib / 1024, 1),
        "gateway_peak_bytes_per_row": round((peak_kib - idle_kib) * 1024 / size, 1),
        "server_cpu_s_gateway": sides["gateway"]["server_cpu_s"],
        "server_cpu_s_copy": sides["copy"]["server_cpu_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="10000,100000,1000000", help="comma-separated sizes")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side per size")
    parser.add_argument("--server", default=DEFAULT_SERVER, help="PostgreSQL for scratch DBs")
    parser.add_argument(
        "--max-upload-bytes",
        type=int,
        default=2 << 30,
        help="CHARTER_MAX_UPLOAD_BYTES for the gateway (the 1 GiB default fits ~2.7M rows)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/ingest_throughput.json")
    args = parser.parse_args()
    sizes = [int(s) for s in args.rows.split(",")]
    env = {
        "CHARTER_MAX_UPLOAD_BYTES": str(args.max_upload_bytes),
        "CHARTER_MAX_BATCH_ROWS": str(max(max(sizes), 1_000_000)),
    }
    before = machine()
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="charter-ingest-") as folder,
        scratch_database(args.server) as url,
    ):
        for size in sizes:
            results.append(measure(url, size, Path(folder), args.repeat, env))
    result = {
        "benchmark": "ingest_throughput",
        "machine": before,
        "load_average_after": machine()["load_average"],
        "repeat": args.repeat,
        "gateway_env": env,
        "results": results,
    }
    write_result(args.out, result)
    plot(
        args.out.with_suffix(".svg"),
        {
            "gateway upload": [(r["rows"], r["gateway_rows_per_s"]) for r in results],
            "PostgreSQL COPY": [(r["rows"], r["copy_rows_per_s"]) for r in results],
        },
        title="Prompt ingest: gateway upload vs raw COPY (median of runs)",
        xlabel="rows",
        ylabel="rows/s",
    )


if __name__ == "__main__":
    main()
