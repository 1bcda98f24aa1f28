"""PM training throughput: Charter's soft-label PMTrainer versus plain TRL RewardTrainer.

Both trainers get the same rows (Charter's exported preference rows, soft labels
included; TRL drops the label column as unused), the same freshly seeded model, the
same arguments and so the same batches in the same order. A sample is one
preference pair. Two measurements, in one run:

1. **End to end.** ``--repeats`` full ``train()`` runs per trainer, alternating in
   ABBA order so that drift in machine load hits both alike; the first
   ``--warmup`` steps of a run are not timed. Samples/s three ways (``METRICS``).
2. **Lockstep.** One model per trainer, single optimizer steps (forward, loss,
   backward, AdamW) alternating between the two on the same batches for
   ``--lockstep-steps`` steps; the median step time gives samples/s. This isolates
   the code that differs (collator, loss, metrics) from load drift, which on a
   shared machine swamps a few-percent difference between whole runs.

For each, the medians per trainer, their ratio charter/trl (goal: >= 0.95) and, end
to end, the median of the per-repetition ratios. The lockstep measurement runs at
every size of ``--batch-sizes`` (fresh trainers per size), so the result also gives
the cost of a pair against the batch size, plotted next to the JSON::

    python bench/pm_throughput.py --threads 1              # small random Llama, CPU or GPU
    python bench/pm_throughput.py --model-dir DIR --steps 20 --batch-size 4
    python bench/pm_throughput.py --threads 1 --batch-sizes 4,8,16,32 --out result.json

Without ``--model-dir`` the model is a random-initialised Llama (``--hidden``,
``--layers``) over a word-level tokenizer built here, so nothing is downloaded.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: import the repository
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    TrainerCallback,
)
from transformers.trainer_callback import PrinterCallback  # noqa: E402
from trl import RewardTrainer  # noqa: E402

from bench.common import log, machine, plot, write_result  # noqa: E402
from charter.core.export import preference_row  # noqa: E402
from services.trainer.pm_config import PMConfig  # noqa: E402
from services.trainer.pm_trainer import PMTrainer, preference_dataset  # noqa: E402

KINDS = ("charter", "trl")
METRICS = ("total", "median_step", "median_step_cpu")
"""End-to-end samples/s: over all timed steps; from the median step's wall time; from
the median step's process CPU time (no waiting for a core: steadier on a shared CPU)."""
WORDS = tuple(f"w{i}" for i in range(1000))
SPECIAL = ("<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "system", "user", "assistant")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|>{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)


def word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate((*SPECIAL, *WORDS))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(list(SPECIAL[:4]))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def rows(n: int, words: int, seed: int = 0) -> list[dict[str, Any]]:
    """Exported preference rows (provenance included) with random texts and soft labels."""
    rng = random.Random(seed)

    def text(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    out = []
    for i in range(n):
        label = {
            "id": f"label-{i}",
            "job_id": "bench",
            "constitution_ref": "default@1",
            "principle_ids": ["p1"],
            "model": "bench",
            "model_revision": "0" * 16,
            "template_hash": "0" * 16,
            "conversation": [{"role": "user", "content": text(words // 2)}],
            "response_a": text(rng.randint(words // 2, words)),
            "response_b": text(rng.randint(words // 2, words)),
            "p_a": rng.uniform(0.05, 0.95),
            "swap_disagreement": False,
        }
        row = preference_row(label)
        assert row is not None
        out.append(row)
    return out


class StepTimer(TrainerCallback):
    """Wall-clock and process CPU time at the end of every optimizer step."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())


def make_model(args: argparse.Namespace, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    torch.manual_seed(args.seed)
    if args.model_dir:
        return AutoModelForSequenceClassification.from_pretrained(
            args.model_dir, num_labels=1, dtype=torch.float32
        )
    config = LlamaConfig(
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.hidden // 64),
        intermediate_size=4 * args.hidden,
        max_position_embeddings=1024,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        num_labels=1,
    )
    return LlamaForSequenceClassification(config)


def make_trainer(
    kind: str,
    args: argparse.Namespace,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    output_dir: str,
    callbacks: list[TrainerCallback] | None = None,
) -> RewardTrainer:
    config = PMConfig(
        learning_rate=1e-4,
        max_steps=args.warmup + args.steps,
        per_device_train_batch_size=args.batch_size,
        logging_steps=10,
        bf16=args.bf16,
        seed=args.seed,
    )
    trainer_class = PMTrainer if kind == "charter" else RewardTrainer
    trainer = trainer_class(
        make_model(args, tokenizer),
        config.training_args(output_dir),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # keep the output to the numbers
    return trainer


def run_once(
    kind: str,
    args: argparse.Namespace,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    output_dir: str,
) -> dict[str, float]:
    """End-to-end samples/s of one ``train()`` run, three ways (``METRICS``)."""
    timer = StepTimer()
    make_trainer(kind, args, tokenizer, dataset, output_dir, [timer]).train()
    first = args.warmup - 1  # the clocks start when the last untimed step ends
    wall = [b - a for a, b in itertools.pairwise(timer.wall[first:])]
    cpu = [b - a for a, b in itertools.pairwise(timer.cpu[first:])]
    return {
        "total": args.steps * args.batch_size / sum(wall),
        "median_step": args.batch_size / statistics.median(wall),
        "median_step_cpu": args.batch_size / statistics.median(cpu),
    }


def lockstep(
    args: argparse.Namespace, tokenizer: PreTrainedTokenizerBase, dataset: Dataset, output_dir: str
) -> dict[str, dict[str, float]]:
    """Median-step samples/s (wall and CPU) with single steps alternating between trainers,
    at ``args.batch_size`` pairs per step."""
    trainers = {kind: make_trainer(kind, args, tokenizer, dataset, output_dir) for kind in KINDS}
    batches = {}
    for kind, trainer in trainers.items():
        batches[kind] = list(trainer.get_train_dataloader())
        trainer.create_optimizer()
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = 1  # set by the training loop otherwise
    times: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in KINDS}
    for step in range(args.warmup + args.lockstep_steps):
        for kind in KINDS if step % 2 == 0 else KINDS[::-1]:
            trainer, batch = trainers[kind], batches[kind][step % len(batches[kind])]
            wall, cpu = time.perf_counter(), time.process_time()
            trainer.training_step(trainer.model, dict(batch))
            trainer.optimizer.step()
            trainer.optimizer.zero_grad()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if step >= args.warmup:
                times[kind]["wall"].append(time.perf_counter() - wall)
                times[kind]["cpu"].append(time.process_time() - cpu)
    return {
        kind: {clock: args.batch_size / statistics.median(v) for clock, v in t.items()}
        for kind, t in times.items()
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", help="a model directory with tokenizer (default: random Llama)")
    ap.add_argument("--hidden", type=int, default=128, help="random Llama hidden size")
    ap.add_argument("--layers", type=int, default=2, help="random Llama layers")
    ap.add_argument("--words", type=int, default=32, help="max words per response")
    ap.add_argument("--batch-size", type=int, default=8, help="pairs per step (end to end)")
    ap.add_argument(
        "--batch-sizes", default="4,8,16", help="comma-separated pairs per lockstep step"
    )
    ap.add_argument("--steps", type=int, default=20, help="timed steps per end-to-end run")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps at the start")
    ap.add_argument("--repeats", type=int, default=4, help="end-to-end runs per trainer")
    ap.add_argument("--lockstep-steps", type=int, default=100, help="timed lockstep steps")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results" / "pm_throughput.json",
        help="JSON result; the plot goes next to it (.svg)",
    )
    args = ap.parse_args(argv)
    if min(args.warmup, args.steps, args.repeats, args.lockstep_steps) < 1:
        ap.error("--warmup, --steps, --repeats and --lockstep-steps must be >= 1")
    try:
        sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        ap.error(f"--batch-sizes: not a comma-separated list of integers: {args.batch_sizes!r}")
    if not sizes or min(sizes) < 1:
        ap.error("--batch-sizes: every size must be >= 1")
    sizes = sorted(set(sizes) | {args.batch_size})  # the headline size is always measured
    if args.threads:
        torch.set_num_threads(args.threads)

    tokenizer = (
        AutoTokenizer.from_pretrained(args.model_dir) if args.model_dir else word_tokenizer()
    )
    # The same rows for both: the soft label stays; RewardTrainer drops it as an unused column.
    largest = max(args.batch_size, *sizes)
    dataset = preference_dataset(rows((args.warmup + args.steps) * largest, args.words))
    started = machine()

    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for kind in KINDS if rep % 2 == 0 else KINDS[::-1]:
                run = run_once(kind, args, tokenizer, dataset, tmp)
                runs[kind].append(run)
                numbers = "  ".join(f"{k} {v:7.2f}" for k, v in run.items())
                print(f"run {rep + 1:2d}/{args.repeats} {kind:8s} samples/s: {numbers}", flush=True)
        by_size = {}
        for size in sizes:
            log(f"lockstep at {size} pairs per step")
            by_size[size] = lockstep(
                argparse.Namespace(**(vars(args) | {"batch_size": size})), tokenizer, dataset, tmp
            )
    steps = by_size[args.batch_size]

    print("end to end (median over repetitions, samples/s):")
    end_to_end = {}
    for metric in METRICS:
        charter = [r[metric] for r in runs["charter"]]
        trl = [r[metric] for r in runs["trl"]]
        end_to_end[metric] = {
            "median_charter": statistics.median(charter),
            "median_trl": statistics.median(trl),
            "ratio": statistics.median(charter) / statistics.median(trl),
            # A repetition ran the two back to back: its own ratio cancels slow load drift.
            "median_paired_ratio": statistics.median(
                c / t for c, t in zip(charter, trl, strict=True)
            ),
        }
        e = end_to_end[metric]
        print(
            f"  {metric:16s} charter {e['median_charter']:7.2f}  trl {e['median_trl']:7.2f}  "
            f"ratio {e['ratio']:.3f}  paired {e['median_paired_ratio']:.3f}"
        )
    print(f"lockstep ({args.lockstep_steps} steps each, median step, samples/s):")
    lockstep_report = {}
    for size, result in by_size.items():
        ratio = {c: result["charter"][c] / result["trl"][c] for c in ("wall", "cpu")}
        lockstep_report[str(size)] = {**result, "ratio": ratio}
        for clock in ("wall", "cpu"):
            charter, trl = result["charter"][clock], result["trl"][clock]
            print(
                f"  batch {size:3d} {clock:5s} charter {charter:7.2f}  trl {trl:7.2f}  "
                f"ratio {ratio[clock]:.3f}"
            )
    print("goal: ratio >= 0.95")

    report = {
        "machine": {
            **started,
            "load_average_end": machine()["load_average"],
            "torch_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        },
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "end_to_end": {"runs": runs, "summary": end_to_end},
        "lockstep": {
            **steps,
            "ratio": {c: steps["charter"][c] / steps["trl"][c] for c in ("wall", "cpu")},
            "by_batch_size": lockstep_report,
        },
    }
    write_result(args.out, report)
    plot(
        args.out.with_suffix(".svg"),
        {
            f"{kind} ({clock})": [
                (size, 1000 / result[kind][clock]) for size, result in by_size.items()
            ]
            for kind in KINDS
            for clock in ("wall", "cpu")
        },
        title="PM training: cost of a preference pair (lockstep)",
        xlabel="pairs per step",
        ylabel="ms per pair (median step)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
