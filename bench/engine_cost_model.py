"""Fit the transformers engine's cost model (workers/engines/batch_plan.py) on this machine.

Times scoring passes of rows x width random tokens, with and without a cached
prefix, exactly as the engine runs them (``TransformersEngine._last_logprobs``),
and fits ``seconds = per_forward + T * (per_token + per_key * (w + 1) / 2 +
per_cached_key * context)``, T = rows x width, by least squares. CPU time of this
process is the default clock: with one torch thread it is what the pass costs,
and other jobs on a shared machine inflate it far less than wall time. Then it
times sampled decode steps (24 steps of 1-32 rows) for the per-row decode cost.

    python bench/engine_cost_model.py --threads 1 --out bench/results/engine_cost_model.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

GRID = [
    (rows, width, context)
    for width in (32, 128, 384, 896)
    for rows in (1, 2, 4, 8, 16)
    for context in (0, 128, 460)
    if rows * width <= 8192 and (context == 0 or width <= 384)
]


def machine() -> dict[str, object]:
    cpu = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next(
            (ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
             if ln.startswith("model name")),
            "",
        )  # fmt: skip
    import os

    import torch

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=None, help="default: SmolLM2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="best of N per shape")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--max-width", type=int, default=896)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from charter.core.engine_config import EngineConfig
    from charter.model_store import prepare_smollm2
    from charter.settings import Settings
    from workers.engines.batch_plan import ForwardCost
    from workers.engines.transformers_engine import TransformersEngine

    path = args.model_dir or prepare_smollm2(Settings().models_dir / "smollm2")
    config = EngineConfig(device=args.device, threads=args.threads)
    engine = TransformersEngine(path, model_name="bench", config=config)
    clock = time.process_time if args.clock == "cpu" and args.device == "cpu" else time.perf_counter
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    gen = torch.Generator().manual_seed(0)
    vocab = int(engine.model.config.get_text_config().vocab_size)

    def tokens(rows: int, width: int) -> list[list[int]]:
        return torch.randint(100, vocab, (rows, width), generator=gen).tolist()

    def time_pass(rows: int, width: int, context: int) -> float:
        batch = tokens(rows, width)
        prefix = tokens(1, context)[0] if context else None
        sync()
        start = clock()
        with torch.inference_mode():
            kv = engine._prefix_cache(prefix) if prefix else None
            prefix_seconds = clock() - start
            engine._last_logprobs(batch, context, kv)
        sync()
        return clock() - start - prefix_seconds

    grid = [g for g in GRID if g[1] <= args.max_width]
    time_pass(2, 16, 0)  # warm-up
    best: dict[tuple[int, int, int], float] = {}
    for _ in range(args.repeats):
        for shape in grid:
            seconds = time_pass(*shape)
            best[shape] = min(best.get(shape, seconds), seconds)

    features = torch.tensor(
        [[1.0, r * w, r * w * (w + 1) / 2, r * w * c] for (r, w, c) in grid], dtype=torch.float64
    )
    target = torch.tensor([best[g] for g in grid], dtype=torch.float64)
    # Relative least squares: every shape counts the same, not only the big ones.
    weights = 1 / target
    solution = torch.linalg.lstsq(features * weights[:, None], target * weights).solution
    fitted = [max(float(x), 0.0) for x in solution]
    cost = ForwardCost(*fitted[:1], max(fitted[1], 1e-12), *fitted[2:])
    errors = [cost.forward(r, w, c) / best[(r, w, c)] - 1 for (r, w, c) in grid]

    # Decode steps: greedy generation of rows x steps after a 64-token prompt. The step
    # cost is fitted as per_forward + rows * (per_decode_token + per_cached_key * keys),
    # keeping per_forward and per_cached_key from the passes above.
    decode = []
    steps, width = 24, 64
    for rows in (1, 4, 16, 32):
        ids = torch.tensor(tokens(1, width) * rows, device=engine.device)
        sync()
        start = clock()
        with torch.inference_mode():
            engine.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=steps,
                min_new_tokens=steps,
                do_sample=True,
                top_p=0.95,
                top_k=0,
                pad_token_id=engine.pad_token_id,
            )
        sync()
        decode.append({"rows": rows, "seconds": clock() - start})
    step_extra = [
        ((d["seconds"] - cost.forward(d["rows"], width)) / steps - cost.per_forward) / d["rows"]
        - cost.per_cached_key * (width + steps / 2)
        for d in decode
    ]
    per_decode_token = max(sorted(step_extra)[len(step_extra) // 2], 0.0)
    cost = ForwardCost(
        cost.per_forward, cost.per_token, cost.per_key, cost.per_cached_key, per_decode_token
    )
    for d in decode:
        d["model_seconds"] = round(cost.generation(d["rows"], width, steps), 3)
        d["seconds"] = round(d["seconds"], 3)
    fitted.append(per_decode_token)

    result = {
        "model": str(path),
        "device": args.device,
        "clock": args.clock,
        "machine": machine(),
        "fit": {
            "per_forward": fitted[0],
            "per_token": fitted[1],
            "per_key": fitted[2],
            "per_cached_key": fitted[3],
            "per_decode_token": fitted[4],
        },
        "median_abs_relative_error": sorted(abs(e) for e in errors)[len(errors) // 2],
        "shapes": [
            {
                "rows": r,
                "width": w,
                "context": c,
                "seconds": round(best[(r, w, c)], 4),
                "model_seconds": round(cost.forward(r, w, c), 4),
            }
            for (r, w, c) in grid
        ],
        "decode": decode,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "shapes"}, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
