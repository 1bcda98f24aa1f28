"""Generation on a CPU: batch 1 against length buckets against one bucket, and the sampler, in ONE run.

On real SL-CAI critique prompts (the HHH prompts of bench/data/hhh_pairs.jsonl with
their first response as the text to critique, the default constitution, no
few-shot), one ``TransformersEngine.generate`` call over all rows, sampled with the
job defaults (temperature 0.7, top-p 0.95), under three plans, alternately:

- ``batch1``: one row per pass (``max_batch_size=1``), what a plain loop does;
- ``planned``: the engine's default, buckets cut by the cost model;
- ``one_bucket``: every row in one left-padded bucket.

Then the sampler alone: the same padded batch through ``model.generate`` with
transformers' own top-p warper (sorts the vocabulary) and with the engine's
:class:`~workers.engines.sampling.NucleusFilter`, same seed: the tokens must be
identical. CPU seconds of this process (1 torch thread) are the clock: other jobs on
a shared machine move them far less than wall time. The shared token prefix of the
prompts is reported too (what prefix reuse could save in the prefill).

    python bench/generation_plans.py --prompts 8 --max-tokens 32 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: import the repository
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402

DATA = ROOT / "bench" / "data" / "hhh_pairs.jsonl"


def critique_prompts(n: int) -> list[list[dict[str, str]]]:
    from charter.core import prompts
    from charter.core.constitution import Constitution

    rules = Constitution.model_validate(
        yaml.safe_load((ROOT / "constitutions" / "default.yaml").read_text())
    )
    pairs = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()][:n]
    out = []
    for position, pair in enumerate(pairs):
        principle = prompts.draw(
            rules.critique_principles, prompts.derive_seed(1, position, "critique", 0)
        )
        conversation = [{"role": "user", "content": pair["prompt"]}]
        step = prompts.critique_step(
            rules, principle, conversation, pair["response_a"], few_shot=False
        )
        out.append(step.critique())
    return out


def cpu_seconds(fn: Any) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=None, help="default: SmolLM2")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/generation_plans.json")
    args = parser.parse_args()

    import torch
    from transformers import LogitsProcessorList

    from charter.core.engine import SamplingParams
    from charter.core.engine_config import EngineConfig
    from workers.engines.batch_plan import CPU_COST, ForwardCost
    from workers.engines.sampling import NucleusFilter
    from workers.engines.transformers_engine import TransformersEngine, _common_prefix_len

    if args.model_dir is None:
        from charter.model_store import prepare_smollm2
        from charter.settings import Settings

        args.model_dir = prepare_smollm2(Settings().models_dir / "smollm2")
    engine = TransformersEngine(
        args.model_dir, model_name="bench", config=EngineConfig(threads=args.threads)
    )
    convs = critique_prompts(args.prompts)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.7, top_p=0.95)
    ids = [engine.encode_prompt(c) for c in convs]
    lengths = [len(i) for i in ids]
    # A huge fixed cost per pass makes the planner put every row in one bucket.
    one = ForwardCost(1e6, CPU_COST.per_token, CPU_COST.per_key, CPU_COST.per_cached_key)
    plans = {
        "batch1": {"max_batch_size": 1, "cost": CPU_COST},
        "planned": {"max_batch_size": engine.max_batch_size, "cost": CPU_COST},
        "one_bucket": {"max_batch_size": engine.max_batch_size, "cost": one},
    }

    width = max(lengths)
    batch = torch.full((len(ids), width), engine.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(batch)
    for row, p in enumerate(ids):
        batch[row, width - len(p) :] = torch.tensor(p)
        mask[row, width - len(p) :] = 1
    common_kwargs = {
        "input_ids": batch,
        "attention_mask": mask,
        "max_new_tokens": args.max_tokens,
        "min_new_tokens": args.max_tokens,  # the same steps on both sides
        "pad_token_id": engine.pad_token_id,
        "do_sample": True,
    }
    samplers = {
        "sorting_top_p": {"temperature": 0.7, "top_p": 0.95, "top_k": 0},
        "nucleus_filter": {
            "temperature": 1.0,
            "top_p": 1.0,
            "top_k": 0,
            "logits_processor": LogitsProcessorList([NucleusFilter(0.7, 0.95)]),
        },
    }
    seconds: dict[str, list[float]] = {k: [] for k in [*plans, *samplers]}
    buckets: dict[str, list[list[int]]] = {}
    tokens: dict[str, list[int]] = {}
    for repeat in range(args.repeats):
        common.log(f"repeat {repeat + 1}/{args.repeats}")
        for name, knobs in plans.items():
            engine.reconfigure(max_batch_size=knobs["max_batch_size"])
            engine.cost = knobs["cost"]
            seconds[name].append(cpu_seconds(lambda: engine.generate(convs, params, seed=7)))
            assert engine.last_plan is not None
            buckets[name] = engine.last_plan.buckets
        for name, kwargs in samplers.items():

            def run(kwargs: dict[str, Any] = kwargs, name: str = name) -> None:
                torch.manual_seed(7)
                with torch.inference_mode():
                    out = engine.model.generate(**common_kwargs, **kwargs)
                tokens[name] = out[:, width:].flatten().tolist()

            seconds[name].append(cpu_seconds(run))
    mean = {k: round(sum(v) / len(v), 2) for k, v in seconds.items()}
    result = {
        "prompts": len(convs),
        "prompt_tokens": lengths,
        "shared_prefix_tokens": _common_prefix_len(ids),
        "max_tokens": args.max_tokens,
        "threads": args.threads,
        "machine": common.machine(),
        "cpu_seconds": seconds,
        "mean_cpu_seconds": mean,
        "buckets": buckets,
        "batch1_over_planned": round(mean["batch1"] / mean["planned"], 3),
        "one_bucket_over_planned": round(mean["one_bucket"] / mean["planned"], 3),
        "sorting_over_nucleus_filter": round(mean["sorting_top_p"] / mean["nucleus_filter"], 3),
        "sampler_tokens_identical": tokens["sorting_top_p"] == tokens["nucleus_filter"],
    }
    result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    common.write_result(args.out, result)


if __name__ == "__main__":
    main()
