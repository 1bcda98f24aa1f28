"""Dataset export through the gateway against PostgreSQL ``COPY TO``, and freezing, 10k-1M rows.

One scratch database gets N labels of one kind (``--sizes``, largest first needed:
default 10k, 100k and 1M), written with COPY as nested jobs so that ``job_ids``
filters select the first 10k, 100k, ... labels. For each size, in lockstep:

- **freeze**: ``POST /v1/datasets`` (it answers at once; the gateway freezes in the
  background, in batches) polled until ``ready``, against the old synchronous path
  run in this process: one transaction with one ``INSERT ... SELECT`` of every row
  and the checksum pass, exactly what the request did before (``one_transaction``);
- **export**: the version streamed by a fresh uvicorn gateway to /dev/null (curl)
  as JSONL and as Parquet, alternating with ``COPY (SELECT <the columns the export
  reads> ...) TO STDOUT`` of the same rows. The gateway's RSS is sampled while it
  streams and its peak (VmHWM) read after each size: flat means it does not grow
  with the rows.

``ratio`` is COPY's seconds over the gateway's, per lockstep pair (the median is
reported, and best against best). Results as JSON, and SVG plots of seconds per
1k rows against rows (``--out``, with ``.svg`` plots beside it).

    python bench/export_throughput.py --kind sft --out bench/results/export_throughput_sft.json
    python bench/export_throughput.py --kind preference --sizes 10000,100000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    DEFAULT_SERVER,
    Gateway,
    admin_key,
    dsn,
    log,
    machine,
    plot,
    scratch_database,
    write_result,
)
from charter.core.refs import parse_ref
from services.gateway.datasets.schemas import NAME_PATTERN

PHRASE = (
    "the assistant should explain clearly why this request may be harmful and offer a safer "
    "alternative that still helps with the underlying goal while staying honest kind and "
    "respectful of the person asking including when the topic is sensitive or très délicat"
)
WORDS = tuple(PHRASE.split(" "))


class Texts:
    """Random word strings, drawn once and reused, so that generating rows is cheap."""

    def __init__(self, rng: random.Random, pool: int = 4096) -> None:
        self._rng = rng
        self._pools: dict[int, list[str]] = {}
        self._size = pool

    def __call__(self, words: int) -> str:
        pool = self._pools.get(words)
        if pool is None:
            pool = self._pools[words] = [
                " ".join(self._rng.choice(WORDS) for _ in range(words)) for _ in range(self._size)
            ]
        return pool[self._rng.randrange(self._size)]


# --------------------------------------------------------------------------- labels


def seed(url: str, project_id: str, sizes: list[int], kind: str) -> list[str]:
    """``max(sizes)`` labels in nested jobs: the first ``sizes[k]`` labels are jobs 0..k."""
    job_type = "sl_cai" if kind == "sft" else "compare"
    rows = sizes[-1]
    ids = {k: secrets.token_hex(16) for k in ("constitution", "version", "batch")}
    jobs = [secrets.token_hex(16) for _ in sizes]
    bounds = list(zip([0, *sizes[:-1]], sizes, strict=True))
    with psycopg.connect(dsn(url)) as conn:
        conn.execute(
            "INSERT INTO constitutions (id, project_id, name, created_at) "
            "VALUES (%s, %s, 'default', now())",
            (ids["constitution"], project_id),
        )
        conn.execute(
            "INSERT INTO constitution_versions (id, constitution_id, version, content, "
            "content_hash, created_at) VALUES (%s, %s, 1, '{}', %s, now())",
            (ids["version"], ids["constitution"], "0" * 64),
        )
        conn.execute(
            "INSERT INTO prompt_batches (id, project_id, name, row_count, created_at) "
            "VALUES (%s, %s, 'bench', %s, now())",
            (ids["batch"], project_id, rows),
        )
        conn.execute(
            "INSERT INTO prompts (batch_id, position, prompt) "
            "SELECT %s, g, 'Prompt number ' || g FROM generate_series(0, %s - 1) AS g "
            "ORDER BY g",
            (ids["batch"], rows),
        )
        for job, (lo, hi) in zip(jobs, bounds, strict=True):
            conn.execute(
                "INSERT INTO jobs (id, project_id, type, batch_id, constitution_version_id, "
                "constitution_ref, model, params, seed, status, item_count, chunk_count, "
                "created_at, updated_at) VALUES (%s, %s, %s, %s, %s, 'default@1', 'smollm2', "
                "'{}', 1, 'completed', %s, %s, now(), now())",
                (job, project_id, job_type, ids["batch"], ids["version"], hi - lo, hi - lo),
            )
            conn.execute(
                "INSERT INTO work_items (job_id, prompt_id, chunk, status, attempt, updated_at) "
                "SELECT %s, id, position, 'done', 1, now() FROM prompts "
                "WHERE batch_id = %s AND position >= %s AND position < %s ORDER BY position",
                (job, ids["batch"], lo, hi),
            )
        span = conn.execute(
            "SELECT min(w.id), max(w.id), min(p.id), max(p.id) FROM work_items w "
            "JOIN prompts p ON p.id = w.prompt_id"
        ).fetchone()
        assert span is not None
        w0, w1, p0, p1 = span
        assert w1 - w0 + 1 == rows and p1 - p0 + 1 == rows, "ids are not contiguous"
        log(f"prompts and work items in; COPY {rows:,} {job_type} labels")
        start = time.perf_counter()
        _copy_labels(conn, rows, kind, job_type, jobs, bounds, project_id, ids["version"], w0, p0)
        conn.commit()
        conn.execute("ANALYZE")
        log(f"labels in: {rows / (time.perf_counter() - start):,.0f} rows/s")
    return jobs


def _copy_labels(
    conn: psycopg.Connection[Any],
    rows: int,
    kind: str,
    job_type: str,
    jobs: list[str],
    bounds: list[tuple[int, int]],
    project_id: str,
    version_id: str,
    w0: int,
    p0: int,
) -> None:
    columns = (
        "work_item_id, job_id, project_id, prompt_id, kind, conversation, response, "
        "completion, response_a, response_b, p_a, p_a_forward, p_a_swapped, "
        "swap_disagreement, choice_mass, principle_ids, constitution_version_id, "
        "constitution_ref, model, model_revision, engine, template_version, template_hash, "
        "job_params, seed, worker_id, attempt, timings, created_at"
    )
    rng = random.Random(0)
    text = Texts(rng)
    fixed = (
        f"{version_id}\tdefault@1\tsmollm2\tabc123def4567890\ttransformers\tv3\t{'ab' * 32}\t"
        '{"max_tokens": 192, "temperature": 0.7}\t1\tworker-1\t1\t{"total": 1.5}\t'
        "2026-01-01 00:00:00+00\n"
    )
    job_of = [job for job, (lo, hi) in zip(jobs, bounds, strict=True) for _ in range(hi - lo)]
    # The rows are consistent by construction: skip the per-row foreign-key triggers.
    conn.execute("SET session_replication_role = replica")
    with conn.cursor() as cursor, cursor.copy(f"COPY labels ({columns}) FROM STDIN") as copy:
        lines: list[str] = []
        for i in range(rows):
            conversation = json.dumps(
                [{"role": "user", "content": f"Prompt number {i}: {text(12)}?"}],
                ensure_ascii=False,
            )
            if kind == "sft":
                response, completion = text(40), text(60)
                pair = "\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N"
                principles = '["harmful-content", "honesty"]'
            else:
                response, completion = "\\N", "\\N"
                p = rng.random()
                pair = (
                    f"{text(30)}\t{text(30)}\t{p!r}\t{p!r}\t{p!r}\t"
                    f"{'t' if rng.random() < 0.1 else 'f'}\t0.93"
                )
                principles = '["less-harmful"]'
            lines.append(
                f"{w0 + i}\t{job_of[i]}\t{project_id}\t{p0 + i}\t{job_type}\t"
                f"{conversation}\t{response}\t{completion}\t{pair}\t{principles}\t{fixed}"
            )
            if len(lines) == 10_000:
                copy.write("".join(lines))
                lines.clear()
        copy.write("".join(lines))
    conn.execute("SET session_replication_role = DEFAULT")


# --------------------------------------------------------------------------- freezing


def freeze_via_gateway(gateway: Gateway, key: str, kind: str, jobs: list[str]) -> dict[str, Any]:
    """POST (answered at once), then GET until ready: the background freeze's wall time."""
    headers = {"X-API-Key": key}
    body = {"name": f"bench-{len(jobs)}", "kind": kind, "filter": {"job_ids": jobs}}
    begin = time.perf_counter()
    response = httpx.post(f"{gateway.base}/v1/datasets", json=body, headers=headers, timeout=600)
    response.raise_for_status()
    answered = time.perf_counter() - begin
    version = response.json()
    polls = 0
    while version["state"] == "freezing":
        time.sleep(0.05)
        polls += 1
        version = httpx.get(
            f"{gateway.base}/v1/datasets/{version['ref']}", headers=headers, timeout=60
        ).json()
    assert version["state"] == "ready", version
    return {
        "seconds": time.perf_counter() - begin,
        "answered_seconds": answered,
        "polls": polls,
        "version": version,
    }


def freeze_one_transaction(url: str, project_id: str, kind: str, jobs: list[str]) -> dict[str, Any]:
    """The synchronous path the request took before: count, one ``INSERT ... SELECT``
    of every row and the checksum, all in one transaction (here, in this process)."""
    from charter.db.session import make_engine, session_factory
    from services.gateway.datasets import export, freezing, service
    from services.gateway.datasets.schemas import DatasetCreate

    spec = DatasetCreate.model_validate(
        {"name": f"one-tx-{len(jobs)}", "kind": kind, "filter": {"job_ids": jobs}}
    )
    engine = make_engine(url)
    try:
        begin = time.perf_counter()
        with session_factory(engine)() as session, session.begin():
            _, version = service.create(session, project_id, spec)
            version.lease_owner = "bench"  # the gateway's freezer leaves it alone
            session.flush()
            state = freezing.step(
                session, version.id, "bench", batch_rows=version.rows_total, lease_seconds=600
            )
            assert state == "more"
            digest = export.checksum(session, version.id, kind, version.rows_total)
            assert freezing.finish(session, version.id, "bench", digest)
            rows, checksum = version.row_count, version.checksum
        return {"seconds": time.perf_counter() - begin, "rows": rows, "checksum": checksum}
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- export


def export_via_gateway(gateway: Gateway, key: str, ref: str, fmt: str) -> dict[str, Any]:
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            samples.append(gateway.memory("VmRSS"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu = gateway.cpu_seconds()
    begin = time.perf_counter()
    out = subprocess.run(
        [
            *("curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download}"),
            *("-H", f"X-API-Key: {key}"),
            f"{gateway.base}/v1/datasets/{ref}/export?format={fmt}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - begin
    cpu = gateway.cpu_seconds() - cpu
    done.set()
    sampler.join()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "bytes": int(out.stdout),
        "rss_kib_max": max(samples, default=gateway.memory("VmRSS")),
    }


def copy_baseline(url: str, version_id: str, kind: str) -> dict[str, Any]:
    """COPY of the columns the export reads, in the export's order, read and discarded."""
    from services.gateway.datasets.export import _LABEL_COLUMNS

    columns = ", ".join(f"l.{c.key}" for c in _LABEL_COLUMNS[kind])
    query = (
        f'COPY (SELECT r."row", {columns} FROM dataset_rows r '
        "LEFT JOIN labels l ON l.id = r.label_id "
        f"WHERE r.version_id = '{version_id}' ORDER BY r.seq) TO STDOUT"
    )
    size = 0
    begin = time.perf_counter()
    with psycopg.connect(dsn(url)) as conn, conn.cursor() as cursor, cursor.copy(query) as copy:
        for block in copy:
            size += len(block)
    return {"seconds": time.perf_counter() - begin, "bytes": size}


def _version_id(url: str, name: str, number: int) -> str:
    with psycopg.connect(dsn(url)) as conn:
        row = conn.execute(
            "SELECT v.id FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id "
            "WHERE d.name = %s AND v.version = %s",
            (name, number),
        ).fetchone()
    assert row is not None
    return str(row[0])


def _per_1k(seconds: float, rows: int) -> float:
    return seconds / rows * 1000


def _summary(runs: list[dict[str, Any]], copies: list[dict[str, Any]], rows: int) -> dict[str, Any]:
    best, copy = min(r["seconds"] for r in runs), min(c["seconds"] for c in copies)
    return {
        "rows_per_s": round(rows / best),
        "seconds": [round(r["seconds"], 3) for r in runs],
        "cpu_us_per_row": round(min(r["cpu_seconds"] for r in runs) / rows * 1e6, 2),
        "mib": round(runs[0]["bytes"] / 2**20, 1),
        "ratio_per_run": [
            round(c["seconds"] / r["seconds"], 3) for r, c in zip(runs, copies, strict=True)
        ],
        "ratio_median": round(
            statistics.median(
                c["seconds"] / r["seconds"] for r, c in zip(runs, copies, strict=True)
            ),
            3,
        ),
        "ratio_best": round(copy / best, 3),
        "rss_mib_max": round(max(r["rss_kib_max"] for r in runs) / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="Comma-separated rows.")
    parser.add_argument("--kind", choices=("sft", "preference"), default="sft")
    parser.add_argument("--repeat", type=int, default=2, help="Lockstep export pairs per size.")
    parser.add_argument("--formats", default="jsonl,parquet")
    parser.add_argument("--server", default=DEFAULT_SERVER, help="PostgreSQL server to use.")
    parser.add_argument("--keep", action="store_true", help="Keep the scratch database.")
    parser.add_argument("--out", type=Path, help="JSON result; the plots go beside it.")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    formats = args.formats.split(",")

    result: dict[str, Any] = {"kind": args.kind, "sizes": sizes, "machine": machine()}
    with scratch_database(args.server, keep=args.keep) as url, tempfile.TemporaryDirectory() as tmp:
        key, project_id = admin_key(url)
        jobs = seed(url, project_id, sizes, args.kind)
        freezes: list[dict[str, Any]] = []
        with Gateway(url, Path(tmp)) as gateway:
            for k, size in enumerate(sizes):
                background = freeze_via_gateway(gateway, key, args.kind, jobs[: k + 1])
                one_tx = freeze_one_transaction(url, project_id, args.kind, jobs[: k + 1])
                version = background.pop("version")
                assert version["row_count"] == one_tx["rows"] == size, (version, one_tx)
                assert version["checksum"] == one_tx["checksum"]
                freezes.append(
                    {
                        "rows": size,
                        "ref": version["ref"],
                        "background_seconds": round(background["seconds"], 3),
                        "background_answered_seconds": round(background["answered_seconds"], 3),
                        "one_transaction_seconds": round(one_tx["seconds"], 3),
                        "ratio": round(one_tx["seconds"] / background["seconds"], 3),
                    }
                )
                log(f"freeze {size:,}: {freezes[-1]}")
            result["freeze"] = freezes
            result["freeze_gateway_peak_rss_mib"] = round(gateway.memory("VmHWM") / 1024, 1)
        # A fresh gateway for the exports, so its peak memory is theirs alone.
        exports: list[dict[str, Any]] = []
        with Gateway(url, Path(tmp)) as gateway:
            result["export_gateway_idle_rss_mib"] = round(gateway.memory("VmHWM") / 1024, 1)
            for freeze in freezes:
                size, ref = freeze["rows"], freeze["ref"]
                name, number = parse_ref(ref, NAME_PATTERN, what="dataset")
                assert number is not None, ref  # a freeze answers its version
                version_id = _version_id(url, name, number)
                runs: dict[str, list[dict[str, Any]]] = {fmt: [] for fmt in formats}
                copies: list[dict[str, Any]] = []
                for _ in range(args.repeat):
                    for fmt in formats:
                        runs[fmt].append(export_via_gateway(gateway, key, ref, fmt))
                    copies.append(copy_baseline(url, version_id, args.kind))
                row: dict[str, Any] = {
                    "rows": size,
                    "copy_rows_per_s": round(size / min(c["seconds"] for c in copies)),
                    "copy_seconds": [round(c["seconds"], 3) for c in copies],
                    "copy_mib": round(copies[0]["bytes"] / 2**20, 1),
                }
                for fmt in formats:
                    row[fmt] = _summary(runs[fmt], copies, size)
                row["gateway_peak_rss_mib_after"] = round(gateway.memory("VmHWM") / 1024, 1)
                exports.append(row)
                log(f"export {size:,}: " + json.dumps(row))
        result["export"] = exports
    result["machine_after"] = machine()
    write_result(args.out, result)
    if args.out is not None:
        _plots(args.out, args.kind, freezes, exports, formats)


def _plots(
    out: Path,
    kind: str,
    freezes: list[dict[str, Any]],
    exports: list[dict[str, Any]],
    formats: list[str],
) -> None:
    series = {
        f"gateway {fmt.upper() if fmt == 'jsonl' else fmt.title()}": [
            (e["rows"], 1000 / e[fmt]["rows_per_s"]) for e in exports
        ]
        for fmt in formats
    }
    series["PostgreSQL COPY TO"] = [(e["rows"], 1000 / e["copy_rows_per_s"]) for e in exports]
    plot(
        out.with_suffix(".svg"),
        series,
        title=f"Export of a {kind} version: cost against size",
        xlabel="rows",
        ylabel="seconds per 1k rows (best run)",
    )
    plot(
        out.with_name(out.stem + "_freeze.svg"),
        {
            "background, batched (through the gateway)": [
                (f["rows"], _per_1k(f["background_seconds"], f["rows"])) for f in freezes
            ],
            "one transaction (the old request)": [
                (f["rows"], _per_1k(f["one_transaction_seconds"], f["rows"])) for f in freezes
            ],
        },
        title=f"Freezing a {kind} version: cost against size",
        xlabel="rows",
        ylabel="seconds per 1k rows",
    )


if __name__ == "__main__":
    main()
