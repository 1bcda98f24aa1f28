"""The loop a user writes without Charter's engine: batch 1, ``model.generate`` and one forward per read.

Side (b) of ``bench/label_throughput.py`` for the generation jobs. Prompt text comes
from ``charter.core.prompts`` (the same templates the platform renders, so both sides
do the same work); everything that runs the model is plain transformers:
``apply_chat_template``, ``model.generate`` with the job's sampling settings (its own
top-p warper), and a forward with ``logits_to_keep=1`` to read the A/B log-probs.

- ``sl_cai``: per prompt, a response, then per round a critique and a revision;
- ``rl_cai``: per prompt, two sampled responses, then per order (forward, and swapped
  when asked) the feedback prompt's A/B read, after a sampled reasoning with chain of
  thought.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Messages = list[dict[str, str]]


@dataclass
class Counts:
    """Model calls of one pass and the tokens they read and wrote."""

    calls: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    texts: list[Any] = field(default_factory=list)
    """One entry per item: the final revision (sl_cai) or the pair and p_A (rl_cai)."""


class PlainLoop:
    """SmolLM2 (or any chat model) loaded with transformers, used one prompt at a time."""

    def __init__(self, model_dir: Path, *, max_tokens: int, temperature: float, top_p: float):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.a_id = self.tokenizer.convert_tokens_to_ids("A")
        self.b_id = self.tokenizer.convert_tokens_to_ids("B")
        self.sampling = {"max_new_tokens": max_tokens, "do_sample": temperature > 0}
        if temperature > 0:
            self.sampling |= {"temperature": temperature, "top_p": top_p, "top_k": 0}
        self.counts = Counts()

    def _ids(self, messages: Messages, suffix: str = "") -> Any:
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        ids = self.tokenizer(text + suffix, add_special_tokens=False, return_tensors="pt").input_ids
        self.counts.calls += 1
        self.counts.prompt_tokens += ids.shape[1]
        return ids

    def generate(self, messages: Messages) -> str:
        ids = self._ids(messages)
        with self.torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=self.torch.ones_like(ids),
                pad_token_id=self.tokenizer.pad_token_id,
                **self.sampling,
            )
        new = out[0, ids.shape[1] :]
        self.counts.generated_tokens += len(new)
        return str(self.tokenizer.decode(new, skip_special_tokens=True))

    def read(self, messages: Messages, prefix: str) -> tuple[float, float]:
        """Log-probs of A and B as the next token after the assistant prefix."""
        ids = self._ids(messages, prefix)
        with self.torch.inference_mode():
            last = self.model(input_ids=ids, logits_to_keep=1).logits[0, -1].float()
        logprobs = self.torch.log_softmax(last, dim=-1)
        return float(logprobs[self.a_id]), float(logprobs[self.b_id])


def sl_cai(
    loop: PlainLoop,
    constitution: Any,
    prompts_: Sequence[str],
    *,
    rounds: int,
    few_shot: bool,
    seed: int,
) -> None:
    from charter.core import prompts

    for position, prompt in enumerate(prompts_):
        conversation = [{"role": "user", "content": prompt}]
        latest = loop.generate(prompts.response_conversation(conversation))
        for r in range(rounds):
            principle = prompts.draw(
                constitution.critique_principles,
                prompts.derive_seed(seed, position, "critique", r),
            )
            step = prompts.critique_step(
                constitution, principle, conversation, latest, few_shot=few_shot
            )
            critique = loop.generate(step.critique())
            latest = loop.generate(step.revision(critique))
        loop.counts.texts.append(latest)


def rl_cai(
    loop: PlainLoop,
    constitution: Any,
    prompts_: Sequence[str],
    *,
    chain_of_thought: bool,
    swap: bool,
    few_shot: bool,
    seed: int,
) -> None:
    from charter.core import prompts

    for position, prompt in enumerate(prompts_):
        conversation = [{"role": "user", "content": prompt}]
        policy = prompts.response_conversation(conversation)
        a, b = loop.generate(policy), loop.generate(policy)
        principle = prompts.draw(
            constitution.comparison_principles, prompts.derive_seed(seed, position, "compare")
        )
        reads = []
        for first, second in [(a, b), (b, a)] if swap else [(a, b)]:
            feedback = prompts.feedback_conversation(
                constitution,
                principle,
                conversation,
                first,
                second,
                chain_of_thought=chain_of_thought,
                few_shot=few_shot,
            )
            prefix = prompts.ANSWER_PREFIX
            if chain_of_thought:
                prefix = prompts.cot_answer_prefix(loop.generate(feedback))
            reads.append(loop.read(feedback, prefix))
        loop.counts.texts.append((a, b, reads))


def plain_generation_pass(
    model_dir: Path, job: str, params: Any, constitution: Any, prompts_: Sequence[str], seed: int
) -> dict[str, Any]:
    """One timed pass of the user's loop over every prompt (the model load is not timed)."""
    loop = PlainLoop(
        model_dir,
        max_tokens=params.sampling.max_tokens,
        temperature=params.sampling.temperature,
        top_p=params.sampling.top_p,
    )
    loop.torch.manual_seed(seed)
    start, cpu = time.perf_counter(), time.process_time()
    if job == "sl_cai":
        sl_cai(
            loop, constitution, prompts_, rounds=params.rounds, few_shot=params.few_shot, seed=seed
        )
    else:
        rl_cai(
            loop,
            constitution,
            prompts_,
            chain_of_thought=params.chain_of_thought,
            swap=params.swap,
            few_shot=params.few_shot,
            seed=seed,
        )
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "calls": loop.counts.calls,
        "prompt_tokens": loop.counts.prompt_tokens,
        "generated_tokens": loop.counts.generated_tokens,
    }
