"""Judge evaluation on gold sets, through the platform: SmolLM2 as the feedback model,
the shipped feedback templates side by side, and the injection suite.

An embedded stack (gateway, sweeper and a real Celery worker on SQLite and the
filesystem queue) runs everything as a user would, over the API:

1. the shipped gold set ``examples/gold.jsonl`` (48 hand-written comparisons, balanced
   by answer position and by whether the better response is the longer one) and the 40
   public HHH pairs of ``bench/data/hhh_pairs.jsonl`` are pushed as gold sets;
2. one evaluation per gold set scores it with each shipped template (``charter-chat``,
   ``principle-first``, ``paper-plain``), zero-shot, swap on;
3. one evaluation adds the attack suite to the first ``--injection-items`` items of the
   shipped gold set, for ``charter-chat`` and ``paper-plain``, with the defences on and off.

The reports are the API's (``GET /v1/evals/{id}/report``), written whole to ``--out``.

    python bench/judge_eval.py --out bench/results/judge_eval.json
    python bench/judge_eval.py --engine scripted --injection-items 1   # smoke run, no model
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import log, machine, write_result
from charter.cli.evals import estimate_text
from charter.core import feedback_templates

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2"


def hhh_gold(path: Path) -> bytes:
    """The HHH pairs as gold rows (``better`` is ``A`` or ``B``; the id's prefix is the
    category)."""
    rows = []
    for line in path.read_text().splitlines():
        pair = json.loads(line)
        rows.append(
            {
                "prompt": pair["prompt"],
                "response_a": pair["response_a"],
                "response_b": pair["response_b"],
                "answer": pair["better"].lower(),
                "category": pair["id"].rsplit("-", 1)[0],
            }
        )
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def configs(templates: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "model": MODEL,
            "constitution": "default",
            "feedback_template": name,
            "few_shot": args.few_shot,
            "swap": True,
        }
        for name in templates
    ]


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from charter.client import CharterClient
    from charter.db.migrate import upgrade
    from charter.db.session import make_engine, session_factory
    from charter.embedded import GatewayThread, start_worker, stop_process, sweeper_thread
    from charter.key_issuing import ensure_project, issue_key
    from charter.settings import Settings

    models: dict[str, str] = {}
    if args.engine == "transformers":
        from charter.model_store import prepare_smollm2

        models[MODEL] = str(prepare_smollm2(Settings().models_dir / MODEL))
    settings = Settings(
        data_dir=workdir,
        worker_engine=args.engine,
        worker_models=[MODEL],
        models=models,
        models_dir=workdir / "models",
        worker_threads=args.threads,
    )
    upgrade(settings.effective_database_url)
    with session_factory(make_engine(settings.effective_database_url))() as session:
        project = ensure_project(session, "judge-eval")
        _, key = issue_key(session, project.id, ["admin"], settings.secret_key)
        session.commit()
    results: dict[str, Any] = {}
    with (
        GatewayThread(settings) as gateway,
        sweeper_thread(settings),
        CharterClient(gateway.url, key) as client,
    ):
        client.push_constitution(ROOT / "constitutions" / "default.yaml")
        examples = client.gold_sets.push("examples", ROOT / "examples" / "gold.jsonl")
        hhh = client.gold_sets.push("hhh40", hhh_gold(ROOT / "bench" / "data" / "hhh_pairs.jsonl"))
        log(f"gold sets {examples.ref} ({examples.row_count} rows), {hhh.ref} ({hhh.row_count})")
        shipped = list(feedback_templates.BUILT_IN)
        runs = {
            "examples_templates": {"gold_set": examples.ref, "configs": configs(shipped, args)},
            "hhh40_templates": {"gold_set": hhh.ref, "configs": configs(shipped, args)},
            "examples_injection": {
                "gold_set": examples.ref,
                "configs": configs(["charter-chat", "paper-plain"], args),
                "injection": {"max_items": args.injection_items, "defences_off": True},
            },
        }
        worker = start_worker(settings, name="judge-eval", log=workdir / "worker.log")
        try:
            for name, body in runs.items():
                started = time.perf_counter()
                evaluation = client.evals.create(body | {"name": name, "seed": args.seed})
                log(f"{name}: {len(evaluation.jobs)} jobs, {evaluation.items_total} items")
                done = client.evals.wait(evaluation.id, timeout=args.timeout, poll=2.0)
                seconds = time.perf_counter() - started
                if done.status.value != "completed":
                    raise SystemExit(f"{name}: {done.status.value} after {seconds:.0f} s")
                report = client.evals.report(evaluation.id).model_dump(mode="json")
                results[name] = {"seconds": round(seconds, 1), "report": report}
                log(f"{name}: done in {seconds:.0f} s")
        finally:
            stop_process(worker)
    return results


def markdown(result: dict[str, Any]) -> str:
    """The tables docs/EVALUATION.md and docs/SECURITY.md report, from a result file."""
    out: list[str] = []
    for name in ("examples_templates", "hhh40_templates"):
        report = result["runs"][name]["report"]
        out += [
            f"### {report['gold_set']}",
            "",
            "| template | answered | accuracy, swap-averaged (95%) | forward order | swapped order"
            " | orders disagree | mean P(first) | longer wins | ECE | log-loss |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for config, data in report["configs"].items():
            m = data["metrics"]
            out.append(
                f"| `{config}` | {m['answered']}/{m['n']} | {estimate_text(m['accuracy'])} "
                f"| {estimate_text(m['accuracy_forward'], False)} | {estimate_text(m['accuracy_swapped'], False)} "
                f"| {estimate_text(m['order_inconsistency'], False)} | {estimate_text(m['position_bias'], False)} "
                f"| {estimate_text(m['length_bias']['longer_wins'], False)} | {m['ece']:.3f} "
                f"| {estimate_text(m['log_loss'], False)} |"
            )
        out += [
            "",
            "| first | second | accuracy difference (95%) | McNemar p |",
            "| --- | --- | --- | --- |",
        ]
        for row in report["comparisons"]:
            diff = f"{row['value']:+.2f} ({row['low']:+.2f} to {row['high']:+.2f})"
            out.append(
                f"| `{row['first']}` | `{row['second']}` | {diff} | {row['mcnemar_p']:.3g} |"
            )
        by_category = report["configs"]
        out += [
            "",
            "| template | "
            + " | ".join(next(iter(by_category.values()))["metrics"]["by_category"])
            + " |",
        ]
        out.append(
            "| --- |" + " --- |" * len(next(iter(by_category.values()))["metrics"]["by_category"])
        )
        for config, data in by_category.items():
            cells = [
                estimate_text(m["accuracy"], False) for m in data["metrics"]["by_category"].values()
            ]
            out.append(f"| `{config}` | " + " | ".join(cells) + " |")
        out.append("")
    injection = result["runs"]["examples_injection"]["report"]["injection"]
    out += [
        f"### Injection: {len(injection['attacks'])} payloads (attacks and controls) on "
        f"{injection['gold_items']} gold items",
        "",
        "| template | defences | attacks: flipped / right before | flip rate (95%) | mean shift"
        " toward wrong (95%) | controls: flipped / right before | flip rate (95%) | mean shift |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for config, defences in injection["configs"].items():
        for defence, stats in defences.items():
            o, c = stats["overall"], stats["control"]
            out.append(
                f"| `{config}` | {defence} | {o['flipped']}/{o['clean_right']} "
                f"| {estimate_text(o['flip_rate'])} | {estimate_text(o['mean_shift'])} "
                f"| {c['flipped']}/{c['clean_right']} | {estimate_text(c['flip_rate'])} "
                f"| {estimate_text(c['mean_shift'], False)} |"
            )
    families = list(next(iter(injection["configs"].values()))["all"]["by_family"])
    out += [
        "",
        "| template, defences | " + " | ".join(families) + " |",
        "| --- |" + " --- |" * len(families),
    ]
    for config, defences in injection["configs"].items():
        for defence in defences:
            stats = defences[defence]["by_family"]
            cells = [
                f"{stats[f]['flipped']}/{stats[f]['clean_right']}, {stats[f]['mean_shift']['value']:+.2f}"
                for f in families
            ]
            out.append(f"| `{config}`, {defence} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["transformers", "scripted"], default="transformers")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    parser.add_argument("--few-shot", action="store_true", help="with the worked examples")
    parser.add_argument("--injection-items", type=int, default=6)
    parser.add_argument("--seed", type=int, default=2022)
    parser.add_argument("--timeout", type=float, default=7200)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--markdown", type=Path, help="print the doc tables of a result file")
    args = parser.parse_args()
    if args.markdown is not None:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    with tempfile.TemporaryDirectory(prefix="charter-judge-eval-") as tmp:
        started = time.perf_counter()
        results = run(args, Path(tmp))
    write_result(
        args.out,
        {
            "machine": machine(),
            "engine": args.engine,
            "model": MODEL,
            "few_shot": args.few_shot,
            "seconds": round(time.perf_counter() - started, 1),
            "runs": results,
        },
    )


if __name__ == "__main__":
    main()
