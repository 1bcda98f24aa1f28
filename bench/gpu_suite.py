"""The GPU measurements in one run: engine vs plain transformers, prefill MFU, prefix reuse, PM and PPO.

Written for a machine with an NVIDIA GPU, torch and transformers, but no vLLM, no
network and only a few MiB of files carried over, so SmolLM2's 540 MB of weights may
be absent. The model is then SmolLM2-135M's exact shape (its config, below) with
random weights, and the tokenizer is SmolLM2's own when a directory with it is given
(``--tokenizer-dir``: tokenizer.json, tokenizer_config.json, chat_template.jinja,
3.5 MB) or else a byte-level BPE trained here on the repository's texts (ChatML
template, SmolLM2's special-token ids). The result says which. Timing needs the
model's shape, not its knowledge; with random weights greedy generation rarely stops
early, so generated lengths are the maximum. Sections, for bf16 and fp32:

- ``scoring``: a ``compare`` job (40 HHH pairs, both orders) through
  ``charter.core.pipelines`` on the ``TransformersEngine`` (the CPU code path, on CUDA)
  against a plain batch-1 transformers loop over the same feedback prompts, run
  alternately; p_A agreement;
- ``generation``: ``sl_cai`` (1 round, greedy) through the pipelines on the engine
  against a plain batch-1 ``model.generate`` loop over the same conversations;
- ``prefill``: forward passes of random tokens at a few shapes; tokens/s and MFU =
  2 * parameters * tokens / seconds / peak, peak = the GPU's dense bf16 or fp32
  tensor throughput (``PEAK_TFLOPS``, from NVIDIA's H100/H200 datasheets; the H200
  has the H100 SXM's compute: 989 TFLOPS bf16 dense, 67 TFLOPS fp32);
- ``prefix``: the same engine scoring few-shot prompts (a long shared prefix) with
  shared-prefix KV reuse forced on and off;

then ``pm`` (Charter's PMTrainer vs TRL's RewardTrainer in lockstep,
``bench/pm_throughput.py``) and ``ppo`` (``bench/ppo_step.py``) on the same model.
Every section checks the wall-time budget first (``--budget-s``) and is skipped,
with the reason, once it is spent; a hard alarm writes what was measured and stops.
The JSON is rewritten after every section, so a killed run still leaves its numbers::

    python bench/gpu_suite.py --out bench/results/gpu_suite.json             # on the GPU
    python bench/gpu_suite.py --device cpu --quick --out /tmp/gpu_suite.json  # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench import label_throughput, pm_throughput, ppo_step  # noqa: E402
from bench.common import log, machine, plot, write_result  # noqa: E402

SMOLLM2_CONFIG: dict[str, Any] = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
    "vocab_size": 49152,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}
"""SmolLM2-135M-Instruct's config.json (architecture fields)."""
QUICK_CONFIG = SMOLLM2_CONFIG | {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 1024,
}
SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # SmolLM2's ids 0, 1, 2
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""SmolLM2's chat template."""
PEAK_TFLOPS = {
    "H100": {"bfloat16": 989.0, "float32": 67.0},
    "H200": {"bfloat16": 989.0, "float32": 67.0},
}
"""Dense peak TFLOPS by GPU name: NVIDIA H100 SXM / H200 datasheets (bf16 tensor core
without sparsity; fp32 non-tensor, which torch uses unless TF32 is allowed)."""
DTYPES = ("bfloat16", "float32")


class Budget:
    """The wall-time budget: sections run while it lasts."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.monotonic()

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)


class Aborted(Exception):
    pass


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[float, Any]:
    sync(device)
    start = time.perf_counter()
    value = fn()
    sync(device)
    return time.perf_counter() - start, value


# --------------------------------------------------------------------------- model


def synthetic_tokenizer(vocab_size: int) -> Any:
    """A byte-level BPE trained on the repository's texts, with SmolLM2's special tokens
    (same ids) and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [p.read_text() for p in sorted((ROOT / "constitutions").glob("*.yaml"))]
    texts += [label_throughput.DATA.read_text(), (ROOT / "examples" / "prompts.jsonl").read_text()]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def prepare_model(args: argparse.Namespace, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """The model directory to measure, and how it was made."""
    real = args.model_dir
    if not args.quick and real.is_dir() and any(real.glob("*.safetensors")):
        return real, {"weights": f"real: {real}", "tokenizer": "real (SmolLM2)"}
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    shape = QUICK_CONFIG if args.quick else SMOLLM2_CONFIG
    tokenizer_dir = args.tokenizer_dir or (real if (real / "tokenizer.json").exists() else None)
    if tokenizer_dir is not None and not args.quick:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        how = f"SmolLM2's, from {tokenizer_dir}"
    else:
        tokenizer = synthetic_tokenizer(min(shape["vocab_size"], 8192))
        how = f"synthetic byte-level BPE, {len(tokenizer)} tokens (model vocabulary kept at "
        how += f"{shape['vocab_size']})"
    torch.manual_seed(0)
    config = LlamaConfig(**shape)
    with torch.device(args.device):  # initialising 135M parameters is much faster there
        model = LlamaForCausalLM(config)
    path = workdir / "model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    del model
    label = "SmolLM2-135M" if not args.quick else "tiny (quick)"
    log(f"{real} has no weights: random-initialised {label}-shaped Llama, tokenizer {how}")
    return path, {"weights": f"random-initialised, {label} shape", "tokenizer": how}


class Loaded:
    """The engine and a plain transformers model of one dtype, loaded on first use."""

    def __init__(self, path: Path, dtype: str, args: argparse.Namespace) -> None:
        self.path, self.dtype, self.args = path, dtype, args
        self.device = torch.device(args.device)
        self._engine: Any = None
        self._plain: tuple[Any, Any] | None = None

    def engine(self) -> Any:
        if self._engine is None:
            from charter.core.engine_config import EngineConfig
            from workers.engines.transformers_engine import TransformersEngine

            config = EngineConfig.model_validate(
                {
                    "device": self.args.device,
                    "dtype": self.dtype,
                    "max_batch_size": self.args.max_batch,
                    "max_batch_tokens": self.args.max_batch_tokens,
                }
            )
            self._engine = TransformersEngine(
                self.path, model_name="gpu-suite", config=config, revision="gpu-suite"
            )
        return self._engine

    def plain(self) -> tuple[Any, Any]:
        """(model, tokenizer), loaded the way a user would, without Charter."""
        if self._plain is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            model = AutoModelForCausalLM.from_pretrained(
                self.path, dtype=getattr(torch, self.dtype)
            )
            self._plain = model.to(self.device).eval(), AutoTokenizer.from_pretrained(self.path)
        return self._plain

    def release(self) -> None:
        self._engine = self._plain = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


# --------------------------------------------------------------------------- sections


def pipeline_pass(
    engine: Any, args: argparse.Namespace, job: str, work: list, params: dict
) -> dict:
    """The pipelines over ``work`` on ``engine``, one call per chunk; what they asked for."""
    counted = label_throughput.Counted(engine)
    run_args = argparse.Namespace(job=job, chunk_size=args.chunk_size, seed=0)
    seconds, outcomes = timed(
        engine.device, lambda: label_throughput.run_chunks(counted, run_args, work, params)
    )
    return {"seconds": seconds, "outcomes": outcomes, "counted": counted}


def plain_scores(model: Any, tokenizer: Any, scored: list, device: torch.device) -> list[float]:
    """A user's batch-1 loop: one forward per feedback prompt; p_A of each."""
    a_id, b_id = tokenizer.convert_tokens_to_ids("A"), tokenizer.convert_tokens_to_ids("B")
    out = []
    with torch.inference_mode():
        for conversation, prefix in scored:
            text = tokenizer.apply_chat_template(
                list(conversation), add_generation_prompt=True, tokenize=False
            )
            ids = tokenizer(text + prefix, add_special_tokens=False, return_tensors="pt").input_ids
            last = model(input_ids=ids.to(device), logits_to_keep=1).logits[0, -1].float()
            lp = torch.log_softmax(last, dim=-1)
            out.append(label_throughput.p_a(float(lp[a_id]), float(lp[b_id])))
    return out


def plain_generate(
    model: Any, tokenizer: Any, conversations: list, max_tokens: int, eos: list[int], device: Any
) -> int:
    """A user's batch-1 greedy ``model.generate`` loop; tokens generated."""
    generated = 0
    with torch.inference_mode():
        for conversation in conversations:
            text = tokenizer.apply_chat_template(
                list(conversation), add_generation_prompt=True, tokenize=False
            )
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=torch.ones_like(ids).to(device),
                max_new_tokens=max_tokens,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=eos[0],
            )
            new = out[0, ids.shape[1] :].tolist()
            stops = [i for i, t in enumerate(new) if t in eos]
            generated += stops[0] if stops else len(new)
    return generated


def scoring(models: Loaded, args: argparse.Namespace) -> dict[str, Any]:
    """compare: the engine's pipelines against the plain loop, alternately."""
    engine, plain = models.engine(), models.plain()
    work = label_throughput.items(
        label_throughput.rows(label_throughput.DATA, args.pairs, "compare")
    )
    params = {"swap": True, "few_shot": False}
    engine_s, plain_s, engine_p, plain_p = [], [], [], []
    tokens = 0
    for _ in range(args.repeats):
        run = pipeline_pass(engine, args, "compare", work, params)
        engine_s.append(run["seconds"])
        scored = run["counted"].prompts
        tokens = run["counted"].counts()["prompt_tokens"]
        # A chunk's one scoring call holds all its forward prompts, then all swapped ones.
        engine_p = [
            label_throughput.p_a(*o.fields["choice_logprobs"][order])
            for start in range(0, len(work), args.chunk_size)
            for order in ("forward", "swapped")
            for o in run["outcomes"][start : start + args.chunk_size]
        ]
        seconds, plain_p = timed(
            engine.device, lambda scored=scored: plain_scores(*plain, scored, engine.device)
        )
        plain_s.append(seconds)
    engine_med, plain_med = statistics.median(engine_s), statistics.median(plain_s)
    return {
        "feedback_prompts": len(scored),
        "prompt_tokens": tokens,
        "engine_s": engine_s,
        "plain_s": plain_s,
        "engine_tokens_per_s": tokens / engine_med,
        "plain_tokens_per_s": tokens / plain_med,
        "engine_vs_plain": plain_med / engine_med,
        "max_abs_delta_p_a": max(abs(a - b) for a, b in zip(engine_p, plain_p, strict=True)),
        "last_plan": vars(engine.last_plan) if engine.last_plan else None,
    }


def generation(models: Loaded, args: argparse.Namespace) -> dict[str, Any]:
    """sl_cai (1 round, greedy): the engine's pipelines against the plain generate loop."""
    engine, plain = models.engine(), models.plain()
    work = label_throughput.items(
        label_throughput.rows(label_throughput.DATA, args.items, "sl_cai")
    )
    params = {"rounds": 1, "sampling": {"temperature": 0.0, "max_tokens": args.max_tokens}}
    run = pipeline_pass(engine, args, "sl_cai", work, params)
    counts = run["counted"].counts()
    conversations = [c for c, _ in run["counted"].prompts]
    eos = list(engine.eos_token_ids)
    seconds, plain_tokens = timed(
        engine.device,
        lambda: plain_generate(*plain, conversations, args.max_tokens, eos, engine.device),
    )
    return {
        "items": len(work),
        "generate_calls_rows": len(conversations),
        "max_tokens": args.max_tokens,
        "engine_s": run["seconds"],
        "plain_s": seconds,
        "engine_generated_tokens": counts["generated_tokens"],
        "plain_generated_tokens": plain_tokens,
        "engine_tokens_per_s": counts["generated_tokens"] / run["seconds"],
        "plain_tokens_per_s": plain_tokens / seconds,
        "engine_vs_plain": (counts["generated_tokens"] / run["seconds"]) / (plain_tokens / seconds),
    }


def prefill(models: Loaded, args: argparse.Namespace) -> dict[str, Any]:
    """Forward passes of random tokens (plain model); tokens/s and MFU against the peak."""
    model, dtype, device = models.plain()[0], models.dtype, models.device
    params = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    peak = peak_tflops(device, dtype)
    shapes = [(2, 32), (1, 64)] if args.quick else [(64, 512), (16, 2048), (8, 8192)]
    vocab = model.config.vocab_size
    rows = []
    with torch.inference_mode():
        for batch, length in shapes:
            ids = torch.randint(3, vocab, (batch, length), device=device)
            times = []
            for _ in range(1 + args.prefill_repeats):  # the first pass warms up
                seconds, _ = timed(device, lambda ids=ids: model(input_ids=ids, logits_to_keep=1))
                times.append(seconds)
            seconds = statistics.median(times[1:])
            tokens = batch * length
            achieved = 2 * params * tokens / seconds / 1e12
            rows.append(
                {
                    "batch": batch,
                    "length": length,
                    "tokens": tokens,
                    "seconds": seconds,
                    "tokens_per_s": tokens / seconds,
                    "tflops_2nd": achieved,
                    "mfu": achieved / peak if peak else None,
                    # the head runs on one position per row here: without it the count is
                    "mfu_without_embedding": (
                        achieved * (params - embedding) / params / peak if peak else None
                    ),
                }
            )
    return {
        "parameters": params,
        "embedding_parameters": embedding,
        "peak_tflops": peak,
        "shapes": rows,
    }


def prefix(models: Loaded, args: argparse.Namespace) -> dict[str, Any]:
    """Few-shot feedback prompts (a long shared prefix): KV reuse forced on, then off."""
    engine = models.engine()
    work = label_throughput.items(
        label_throughput.rows(label_throughput.DATA, args.pairs, "compare")
    )
    params = {"swap": True, "few_shot": True}
    out: dict[str, Any] = {}
    p_values: dict[str, list[float]] = {}
    for setting, reuse in (("on", "on"), ("off", "off"), ("on_again", "on")):
        engine.reconfigure(prefix_reuse=reuse)
        run = pipeline_pass(engine, args, "compare", work, params)
        plan = engine.last_plan
        out[setting] = {
            "seconds": run["seconds"],
            "shared_prefix_tokens": plan.shared_prefix if plan else None,
            "reused": plan.reused_prefix if plan else None,
            "padded_tokens": plan.padded_tokens if plan else None,
        }
        p_values[setting] = [o.fields["p_a_forward"] for o in run["outcomes"]]
        out["prompt_tokens"] = run["counted"].counts()["prompt_tokens"]
    engine.reconfigure(prefix_reuse="auto")
    on = statistics.median([out["on"]["seconds"], out["on_again"]["seconds"]])
    out["off_vs_on"] = out["off"]["seconds"] / on
    out["max_abs_delta_p_a"] = max(
        abs(a - b) for a, b in zip(p_values["on"], p_values["off"], strict=True)
    )
    return out


def pm(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Charter's PMTrainer against TRL's RewardTrainer, single steps in lockstep."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    settings = argparse.Namespace(
        model_dir=str(path),
        hidden=32,
        layers=1,
        warmup=2,
        steps=args.pm_steps,
        batch_size=args.pm_batch,
        bf16=args.device.startswith("cuda"),  # mixed precision, as a GPU run would train
        seed=0,
        lockstep_steps=args.pm_steps,
    )
    dataset = pm_throughput.preference_dataset(
        pm_throughput.rows((settings.warmup + settings.steps) * settings.batch_size, args.pm_words)
    )
    with tempfile.TemporaryDirectory() as tmp:
        steps = pm_throughput.lockstep(settings, tokenizer, dataset, tmp)
    return {
        "batch_pairs": settings.batch_size,
        "words_per_response": args.pm_words,
        "bf16_mixed_precision": settings.bf16,
        "samples_per_s": steps,
        "ratio": {c: steps["charter"][c] / steps["trl"][c] for c in ("wall", "cpu")},
    }


def ppo(path: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """PPO steps (policy + reference + PM from the same checkpoint) at a few rollout sizes."""
    settings = argparse.Namespace(
        dtype="bfloat16" if args.device.startswith("cuda") else "float32",
        device=args.device,
        hidden=32,
        model_dir=path,
        mini_batch_size=args.ppo_mini_batch,
        ppo_epochs=args.ppo_epochs,
        response_length=args.ppo_response_length,
        warmup=1,
        steps=args.ppo_steps,
    )
    return [ppo_step.bench("smollm2", settings, size) for size in args.ppo_batches]


# --------------------------------------------------------------------------- driver


def peak_tflops(device: torch.device, dtype: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for gpu, peaks in PEAK_TFLOPS.items():
        if gpu in name:
            return peaks[dtype]
    return None


def environment(args: argparse.Namespace) -> dict[str, Any]:
    info: dict[str, Any] = {"machine": machine(), "torch": torch.__version__, "device": args.device}
    import transformers

    info["transformers"] = transformers.__version__
    if args.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(args.device))
        info |= {
            "gpu": props.name,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "peak_tflops_source": "NVIDIA H100 SXM / H200 datasheets (dense)",
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        }
    return info


def sections(path: Path, args: argparse.Namespace) -> list[tuple[str, Callable[[], Any]]]:
    """(name, run) for every measurement, in order; models load when first needed."""
    out: list[tuple[str, Callable[[], Any]]] = []
    for dtype in DTYPES:
        models = Loaded(path, dtype, args)
        out += [
            (f"scoring_{dtype}", partial(scoring, models, args)),
            (f"generation_{dtype}", partial(generation, models, args)),
            (f"prefill_{dtype}", partial(prefill, models, args)),
            (f"prefix_{dtype}", partial(prefix, models, args)),
            (f"release_{dtype}", models.release),
        ]
    return [*out, ("pm", partial(pm, path, args)), ("ppo", partial(ppo, path, args))]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="the JSON result (plot: .svg beside)")
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    ap.add_argument("--quick", action="store_true", help="tiny shapes: a smoke run on a CPU")
    ap.add_argument("--budget-s", type=float, default=420.0, help="no section starts after this")
    ap.add_argument(
        "--model-dir",
        type=Path,
        default=Path("~/.cache/charter/models/smollm2").expanduser(),
        help="the real SmolLM2 directory, used when it holds weights",
    )
    ap.add_argument("--tokenizer-dir", type=Path, help="SmolLM2's tokenizer files (3.5 MB)")
    args = ap.parse_args(argv)
    if args.budget_s <= 0:
        ap.error("--budget-s must be > 0")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device: CUDA is not available here (use --device cpu --quick)")
    quick = args.quick
    sizes = {
        "pairs": 2 if quick else 40,
        "items": 1 if quick else 8,
        "max_tokens": 4 if quick else 48,
        "chunk_size": 32,
        "repeats": 1 if quick else 2,
        "prefill_repeats": 1 if quick else 3,
        "max_batch": 64,
        "max_batch_tokens": 2048 if args.device == "cpu" else 32768,
        "pm_steps": 2 if quick else 20,
        "pm_batch": 2 if quick else 16,
        "pm_words": 8 if quick else 128,
        "ppo_steps": 1 if quick else 2,
        "ppo_batches": [2] if quick else [8, 32],
        "ppo_mini_batch": 2 if quick else 8,
        "ppo_epochs": 1 if quick else 4,
        "ppo_response_length": 4 if quick else 64,
    }
    return argparse.Namespace(**(vars(args) | sizes))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    result: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "environment": environment(args),
        "budget_s": args.budget_s,
        "sizes": {
            k: v for k, v in vars(args).items() if k not in ("out", "model_dir", "tokenizer_dir")
        },
        "sections": {},
        "skipped": {},
    }

    def save() -> None:
        result["elapsed_s"] = round(args.budget_s - budget.left(), 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")

    def alarm(signum: int, frame: FrameType | None) -> None:
        raise Aborted(f"hard limit of {args.budget_s + 60:.0f} s reached")

    signal.signal(signal.SIGALRM, alarm)
    signal.alarm(int(args.budget_s + 60))  # a section that overruns is cut off here
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path, made = prepare_model(args, Path(tmp))
            result["model"] = made
            save()
            for name, run in sections(path, args):
                if budget.left() <= 0:
                    result["skipped"][name] = "wall-time budget spent"
                    continue
                log(f"{name} ({budget.left():.0f} s of budget left)")
                started = time.monotonic()
                value = run()
                if value is not None:
                    result["sections"][name] = value
                    log(f"{name} took {time.monotonic() - started:.1f} s")
                save()
    except Aborted as exc:
        result["aborted"] = str(exc)
    finally:
        signal.alarm(0)
    result["environment"]["load_average_end"] = machine()["load_average"]
    write_result(args.out, result)
    series = {
        dtype: [(r["tokens"], r["tokens_per_s"]) for r in section["shapes"]]
        for dtype in DTYPES
        if (section := result["sections"].get(f"prefill_{dtype}"))
    }
    if series:
        plot(
            args.out.with_suffix(".svg"),
            series,
            title=f"Prefill throughput, {result['model']['weights']}",
            xlabel="tokens per forward pass",
            ylabel="tokens / s",
            logy=True,
        )
    return 1 if "aborted" in result else 0


if __name__ == "__main__":
    sys.exit(main())
