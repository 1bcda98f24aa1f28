"""How each shipped feedback template judges 40 public HHH pairs with known answers.

For every template, Charter's ``compare`` pipeline runs in-process on a loaded
``TransformersEngine`` (the worker's code path) over ``bench/data/hhh_pairs.jsonl``
with swap on, and each label is checked against the pair's ``better`` field:

- accuracy of the forward order alone, of the swapped order alone, and swap-averaged
  (the label Charter stores, over the pairs it did not abstain on), with Wilson 95%
  intervals, and how often it abstained (P(A)+P(B) below ``min_choice_mass``);
- position bias: how often each order prefers the response shown first, and the mean
  P(first); a judge without bias prefers the first in about half the prompts;
- order inconsistency: how often the two orders disagree about the better response.

    python bench/template_accuracy.py --out bench/results/template_accuracy.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import log, machine, write_result
from charter.core import feedback_templates, pipelines
from charter.core.constitution import Constitution
from charter.core.jobs import JobParams, JobType

ROOT = Path(__file__).resolve().parents[1]


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (round(max(0.0, centre - half), 3), round(min(1.0, centre + half), 3))


def rate(hits: int, n: int) -> dict[str, Any]:
    return {"rate": round(hits / n, 3), "n": n, "wilson95": wilson(hits, n)}


def judge(engine: Any, constitution: Constitution, pairs: list[dict[str, Any]], name: str,
          few_shot: bool) -> dict[str, Any]:  # fmt: skip
    items = [
        pipelines.Item(
            item_id=k,
            prompt_id=k,
            position=k,
            attempt=1,
            conversation=[{"role": "user", "content": p["prompt"]}],
            response_a=p["response_a"],
            response_b=p["response_b"],
        )
        for k, p in enumerate(pairs)
    ]
    params = JobParams(swap=True, few_shot=few_shot, feedback_template=name)
    ctx = pipelines.Context(engine, constitution, params, 1, pipelines.Timer())
    started = time.perf_counter()
    outcomes = [pipelines.run(ctx, JobType.COMPARE, [item], 0)[0] for item in items]
    seconds = time.perf_counter() - started
    n = len(pairs)
    forward_right = swapped_right = averaged_right = first_f = first_s = disagree = 0
    abstained = 0
    p_first: list[float] = []
    mass: list[float] = []
    for outcome, pair in zip(outcomes, pairs, strict=True):
        f = outcome.fields
        a_better = pair["better"] == "A"
        forward, swapped = f["p_a_forward"], f["p_a_swapped"]  # both P(A is better)
        forward_right += (forward > 0.5) == a_better
        swapped_right += (swapped > 0.5) == a_better
        if f["p_a"] is None:  # too little probability on the letters: no label
            abstained += 1
        else:
            averaged_right += (f["p_a"] > 0.5) == a_better
        first_f += forward > 0.5  # the forward order shows A first
        first_s += swapped < 0.5  # the swapped order shows B first
        disagree += (forward > 0.5) != (swapped > 0.5)
        p_first += [forward, 1 - swapped]
        mass.append(f["choice_mass"])
    return {
        "template": name,
        "few_shot": few_shot,
        "seconds": round(seconds, 1),
        "accuracy_forward": rate(forward_right, n),
        "accuracy_swapped": rate(swapped_right, n),
        "accuracy_swap_averaged": rate(averaged_right, n - abstained) if n > abstained else None,
        "abstained": rate(abstained, n),
        "mean_choice_mass": round(sum(mass) / n, 3),
        "prefers_first_forward": rate(first_f, n),
        "prefers_first_swapped": rate(first_s, n),
        "mean_p_first": round(sum(p_first) / len(p_first), 3),
        "order_inconsistency": rate(disagree, n),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--few-shot", action="store_true", help="with the worked examples")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from charter.core.engine_config import EngineConfig
    from charter.model_store import prepare_smollm2
    from workers.engines.transformers_engine import TransformersEngine

    models = Path(os.environ.get("CHARTER_MODELS_DIR", "~/.cache/charter/models")).expanduser()
    engine = TransformersEngine(
        prepare_smollm2(models / "smollm2"),
        model_name="smollm2",
        config=EngineConfig(threads=args.threads),
    )
    constitution = Constitution.model_validate(
        yaml.safe_load((ROOT / "constitutions" / "default.yaml").read_text())
    )
    lines = (ROOT / "bench" / "data" / "hhh_pairs.jsonl").read_text().splitlines()
    pairs = [json.loads(line) for line in lines]
    results = []
    for name in feedback_templates.BUILT_IN:
        result = judge(engine, constitution, pairs, name, args.few_shot)
        log(json.dumps(result))
        results.append(result)
    write_result(args.out, {"machine": machine(), "pairs": len(pairs), "results": results})


if __name__ == "__main__":
    main()
