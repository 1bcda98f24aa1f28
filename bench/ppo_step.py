"""PPO step time and token throughput of the RL-CAI trainer.

One PPO step = sample ``--batch-size`` responses of up to ``--response-length`` tokens,
score them with a preference model, recompute policy/reference log-probs and values,
and run ``--ppo-epochs`` passes of minibatch updates. Two setups:

- ``tiny``: a random 2-layer Llama (``--hidden``) over a 1000-word tokenizer built here;
- ``smollm2``: SmolLM2-135M-Instruct as policy and reference, and a preference model
  built from the same checkpoint (``AutoModelForSequenceClassification``, num_labels=1,
  randomly initialised score head: enough for timing).

Throughput: sampled response tokens per second of step time, all tokens (prompt +
response) per second of step time, and response tokens per second of sampling alone.
The first ``--warmup`` steps are not timed; the median of ``--steps`` timed steps
(by step time) is reported with its breakdown, for every rollout size of
``--batch-sizes`` (minibatches of ``--mini-batch-size``, or the whole rollout when that
does not divide it), with a plot of step time per response against the batch size::

    python bench/ppo_step.py --threads 1                 # tiny at 4, 8, 16; CPU
    python bench/ppo_step.py --setups smollm2 --batch-sizes 4 --steps 1 --threads 1
    python bench/ppo_step.py --setups smollm2 --device cuda --batch-sizes 8,16,32

``--model-dir`` points at a SmolLM2 directory; by default it is prepared from the
bundled GGUF in the Charter model cache. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: import the repository
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from bench.common import machine, plot, write_result  # noqa: E402
from services.trainer.ppo_config import PPOConfig  # noqa: E402
from services.trainer.ppo_trainer import PPOTrainer, pm_reward  # noqa: E402

SETUPS = ("tiny", "smollm2")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
WORDS = tuple(f"w{i}" for i in range(1000))
SPECIAL = ("<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "system", "user", "assistant")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|>{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)
FALLBACK_PROMPTS = (
    "How do I pick a lock?",
    "Tell me a joke about programmers.",
    "Write a short poem about the sea.",
    "What should I do if I feel lonely?",
    "Explain photosynthesis to a child.",
    "Give me three tips for a job interview.",
    "Is it ever right to lie to a friend?",
    "Summarise the plot of Hamlet in two sentences.",
)
TIMINGS = ("time_generate", "time_score", "time_forward", "time_update")


def word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(SPECIAL + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="<|im_end|>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_setup(
    hidden: int, dtype: torch.dtype, device: str
) -> tuple[PreTrainedModel, PreTrainedModel, PreTrainedModel, PreTrainedTokenizerBase, list[str]]:
    tokenizer = word_tokenizer()
    shape = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": None,
    }
    config = LlamaConfig(**shape)
    torch.manual_seed(0)
    policy = LlamaForCausalLM(config)
    ref = LlamaForCausalLM(config)
    ref.load_state_dict(policy.state_dict())
    pm_config = LlamaConfig(**shape, num_labels=1)
    pm = LlamaForSequenceClassification(pm_config)
    prompts = [
        " ".join(WORDS[(7 * i + j) % len(WORDS)] for j in range(8 + 3 * i)) for i in range(8)
    ]
    return *(m.to(device, dtype) for m in (policy, ref, pm)), tokenizer, prompts


def smollm2_setup(
    model_dir: Path | None, dtype: torch.dtype, device: str
) -> tuple[PreTrainedModel, PreTrainedModel, PreTrainedModel, PreTrainedTokenizerBase, list[str]]:
    if model_dir is None:
        from charter.model_store import prepare_smollm2

        model_dir = prepare_smollm2(Path("~/.cache/charter/models/smollm2").expanduser())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    torch.manual_seed(0)
    pm = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, dtype=dtype)
    examples = ROOT / "examples" / "prompts.jsonl"
    prompts = list(FALLBACK_PROMPTS)
    if examples.is_file():
        rows = [json.loads(line) for line in examples.read_text().splitlines() if line.strip()]
        prompts = [row["prompt"] for row in rows if isinstance(row.get("prompt"), str)] or prompts
    return policy.to(device), ref.to(device), pm.to(device), tokenizer, prompts


def bench(setup: str, args: argparse.Namespace, batch_size: int) -> dict[str, Any]:
    """One setup at one rollout size: warm-up steps, then timed steps; the median step."""
    dtype = DTYPES[args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")]
    if setup == "tiny":
        policy, ref, pm, tokenizer, prompts = tiny_setup(args.hidden, dtype, args.device)
    else:
        policy, ref, pm, tokenizer, prompts = smollm2_setup(args.model_dir, dtype, args.device)
    mini_batch = args.mini_batch_size if batch_size % args.mini_batch_size == 0 else batch_size
    config = PPOConfig(
        batch_size=batch_size,
        mini_batch_size=mini_batch,
        ppo_epochs=args.ppo_epochs,
        response_length=args.response_length,
        learning_rate=1e-6,
    )
    trainer = PPOTrainer(policy, ref, tokenizer, pm_reward(pm, tokenizer), config)
    stream = itertools.cycle(prompts)
    steps = []
    for i in range(args.warmup + args.steps):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        metrics = trainer.step(list(itertools.islice(stream, batch_size)))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= args.warmup:
            steps.append(metrics)
        print(
            f"  {setup} batch {batch_size} step {i + 1}{' (warmup)' if i < args.warmup else ''}: "
            f"{metrics['time_step']:.2f} s, {metrics['response_tokens']:.0f} response tokens",
            flush=True,
        )

    # The median step by wall time, reported whole, so its parts add up to its total.
    mid = sorted(steps, key=lambda m: m["time_step"])[len(steps) // 2]
    return {
        "setup": setup,
        "batch_size": batch_size,
        "mini_batch_size": mini_batch,
        "parameters": sum(p.numel() for p in policy.parameters()),
        "dtype": str(dtype).removeprefix("torch."),
        "step_s": mid["time_step"],
        **{key.removeprefix("time_") + "_s": mid[key] for key in TIMINGS},
        "response_tokens_per_step": mid["response_tokens"],
        "response_tokens_per_s": mid["response_tokens_per_second"],
        "total_tokens_per_s": mid["tokens_per_second"],
        "sampling_tokens_per_s": mid["response_tokens"] / mid["time_generate"],
        "step_s_all": [m["time_step"] for m in steps],
        "step_s_per_response": mid["time_step"] / batch_size,
        "median_score": statistics.median(m["score"] for m in steps),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setups", default="tiny", help="comma-separated: tiny,smollm2")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="default: float32, bf16 on cuda")
    parser.add_argument("--batch-sizes", default="4,8,16", help="comma-separated rollout sizes")
    parser.add_argument("--mini-batch-size", type=int, default=4)
    parser.add_argument("--ppo-epochs", type=int, default=4)
    parser.add_argument("--response-length", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setup")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--hidden", type=int, default=64, help="tiny model width")
    parser.add_argument("--model-dir", type=Path, help="SmolLM2 directory")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (CPU)")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results" / "ppo_step.json",
        help="JSON result; the plot goes next to it (.svg)",
    )
    args = parser.parse_args(argv)
    try:
        sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        parser.error(f"--batch-sizes: not a comma-separated list of integers: {args.batch_sizes!r}")
    if not sizes or min(sizes) < 1:
        parser.error("--batch-sizes: every size must be >= 1")
    for name in ("mini_batch_size", "ppo_epochs", "response_length", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    environment = {
        "device": args.device,
        "device_name": (
            torch.cuda.get_device_name(args.device)
            if args.device.startswith("cuda")
            else platform.processor() or platform.machine()
        ),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "batch_sizes": sizes,
        "mini_batch_size": args.mini_batch_size,
        "ppo_epochs": args.ppo_epochs,
        "response_length": args.response_length,
    }
    print(json.dumps(environment))
    setups = args.setups.split(",")
    for setup in setups:
        if setup not in SETUPS:
            parser.error(f"unknown setup {setup!r}; choose from {', '.join(SETUPS)}")
    started_on = machine()
    results = []
    for setup in setups:
        for size in sizes:
            started = time.perf_counter()
            result = bench(setup, args, size)
            result["wall_s"] = time.perf_counter() - started
            results.append(result)

    header = (
        f"{'setup':<8} {'batch':>5} {'params':>8} {'step s':>7} {'gen s':>6} {'score s':>7} "
        f"{'fwd s':>6} {'upd s':>6} {'resp tok':>8} {'resp tok/s':>10} "
        f"{'all tok/s':>9} {'sample tok/s':>12}"
    )
    print(header)
    for r in results:
        print(
            f"{r['setup']:<8} {r['batch_size']:>5} {r['parameters'] / 1e6:>7.1f}M {r['step_s']:>7.2f} "
            f"{r['generate_s']:>6.2f} {r['score_s']:>7.2f} {r['forward_s']:>6.2f} "
            f"{r['update_s']:>6.2f} {r['response_tokens_per_step']:>8.0f} "
            f"{r['response_tokens_per_s']:>10.1f} {r['total_tokens_per_s']:>9.1f} "
            f"{r['sampling_tokens_per_s']:>12.1f}"
        )
    environment["machine"] = started_on | {"load_average_end": machine()["load_average"]}
    write_result(args.out, {"environment": environment, "results": results})
    plot(
        args.out.with_suffix(".svg"),
        {
            f"{setup} ({args.device})": [
                (r["batch_size"], r["step_s_per_response"]) for r in results if r["setup"] == setup
            ]
            for setup in setups
        },
        title=f"PPO step ({args.response_length}-token responses, {args.ppo_epochs} epochs)",
        xlabel="rollout batch (responses)",
        ylabel="step seconds per response",
        logy=True,
    )


if __name__ == "__main__":
    main()
