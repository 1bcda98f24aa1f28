"""PPO under ``accelerate launch``: the script that ``test_ppo_accelerate.py`` launches.

    accelerate launch --cpu --num_processes 2 tests/trainer/ppo_distributed.py OUT_DIR

Every process trains a tiny random Llama (the same seed everywhere, as a real launch
loads the same checkpoint) on an exact reward, the share of the word ``yes`` in the
response, and writes ``rank-<i>.json``: what it saw and its weights' hashes before
and after. Only the main process may append to ``reports.jsonl`` (the report hook)
and write the saved model.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from accelerate import Accelerator
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from services.trainer.ppo_config import PPOConfig  # noqa: E402
from services.trainer.ppo_trainer import PPOTrainer  # noqa: E402

WORDS = ("yes", "no", "maybe", "cat", "dog", "sun", "moon", "tree")
PROMPTS = [f"prompt {i} {WORDS[i % len(WORDS)]}" for i in range(12)]
STEPS = 3


def tokenizer() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(("<pad>", "<unk>", "<eos>", "prompt", *WORDS))}
    vocab |= {str(i): len(vocab) + i for i in range(12)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>"
    )


def policy(vocab_size: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=2,
        bos_token_id=None,
    )
    return LlamaForCausalLM(config).eval()


def weights_hash(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()


def yes_share(prompts: list[str], responses: list[str]) -> torch.Tensor:
    return torch.tensor([r.split().count("yes") / max(len(r.split()), 1) for r in responses])


def main(out: Path) -> None:
    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    tok = tokenizer()
    config = PPOConfig(
        batch_size=4,
        mini_batch_size=2,
        ppo_epochs=2,
        response_length=6,
        learning_rate=1e-3,
        apply_chat_template=False,
        missing_eos_penalty=None,
    )
    trainer = PPOTrainer(
        policy(len(tok)), policy(len(tok)), tok, yes_share, config, accelerator=accelerator
    )
    before = weights_hash(trainer.policy)
    seen: list[str] = []
    step = trainer.step

    def recording_step(prompts: list[str]) -> dict[str, float]:
        seen.extend(prompts)
        return step(prompts)

    trainer.step = recording_step  # type: ignore[method-assign]

    def report(global_step: int, metrics: dict[str, float]) -> None:
        line = {"rank": accelerator.process_index, "step": global_step, "metrics": metrics}
        with (out / "reports.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")

    history = trainer.train(itertools.cycle(PROMPTS), steps=STEPS, report=report)
    trainer.save(out / "model")
    result = {
        "rank": accelerator.process_index,
        "world_size": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "prompts": seen,
        "history": history,
        "kl_coef": trainer.kl_ctl.value,
        "weights_before": before,
        "weights_after": weights_hash(trainer.policy),
        "value_head_after": weights_hash(trainer.value_head),
    }
    (out / f"rank-{accelerator.process_index}.json").write_text(json.dumps(result))
    # Leave the group together (rank 0 may still be saving): destroying gloo's group
    # while another process still holds it can abort in teardown.
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
