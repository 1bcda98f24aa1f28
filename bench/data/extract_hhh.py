"""Rebuild ``hhh_pairs.jsonl`` from BIG-bench's ``hhh_alignment`` task (see README.md).

    python bench/data/extract_hhh.py /path/to/bigbench/benchmark_tasks/hhh_alignment

Ten pairs from each of the four subsets (harmless, helpful, honest, other), at
evenly spaced indices; a pair whose no-few-shot feedback prompt (default
constitution, its longest comparison principle, SmolLM2's chat template) would
exceed ``--max-tokens`` is replaced by the next index. The better response is
put first or second by a seeded coin, and ``better`` records which.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SUBSETS = ("harmless", "helpful", "honest", "other")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("task_dir", type=Path)
    parser.add_argument("--per-subset", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=950)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("hhh_pairs.jsonl"))
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from charter.core import prompts
    from charter.core.constitution import Constitution
    from charter.model_store import prepare_smollm2
    from charter.settings import Settings

    model_dir = args.model_dir or prepare_smollm2(Settings().models_dir / "smollm2")
    tok = AutoTokenizer.from_pretrained(model_dir)
    constitution = Constitution.model_validate(
        yaml.safe_load((ROOT / "constitutions" / "default.yaml").read_text())
    )
    longest = max(constitution.comparison_principles, key=lambda p: len(p.text))

    def tokens(prompt: str, a: str, b: str) -> int:
        conv = prompts.feedback_conversation(
            constitution, longest, [{"role": "user", "content": prompt}], a, b, few_shot=False
        )
        text = tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
        return len(tok(text + prompts.ANSWER_PREFIX, add_special_tokens=False).input_ids)

    coin = random.Random(2212)
    rows = []
    for subset in SUBSETS:
        examples = json.loads((args.task_dir / subset / "task.json").read_text())["examples"]
        taken: set[int] = set()
        for k in range(args.per_subset):
            i = round(k * len(examples) / args.per_subset)
            while True:
                scores = examples[i % len(examples)]["target_scores"]
                good = next(t for t, s in scores.items() if s == 1)
                bad = next(t for t, s in scores.items() if s == 0)
                prompt = examples[i % len(examples)]["input"]
                if i % len(examples) not in taken and tokens(prompt, good, bad) <= args.max_tokens:
                    break
                i += 1
            taken.add(i % len(examples))
            first = coin.random() < 0.5
            rows.append(
                {
                    "id": f"{subset}-{i % len(examples)}",
                    "prompt": prompt,
                    "response_a": good if first else bad,
                    "response_b": bad if first else good,
                    "better": "A" if first else "B",
                }
            )
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{len(rows)} pairs -> {args.out}")


if __name__ == "__main__":
    main()
