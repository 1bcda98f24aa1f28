"""The transformers backend of the :class:`~charter.core.engine.Engine` interface (CPU or GPU).

Batching on a CPU is dominated by padding waste, so every request is sorted by
token length and cut into buckets of at most ``max_batch_size`` rows; results are
put back into input order.

Answer-letter scoring (``choice_logprobs``) runs a single forward pass per bucket.
Feedback prompts in one call usually share a long token prefix (constitution
preamble, few-shot examples); when that prefix is at least ``min_shared_prefix``
tokens it is run once with batch size 1 and its KV cache is expanded along the
batch dimension for every bucket, so only the per-row suffixes are computed.

Letter tokens: the assistant prefix ends with ``"("``. With the SmolLM2 (GPT-2
style byte-level BPE) tokenizer ``"(A"`` encodes as ``["(", "A"]`` and
``"The answer is: (A"`` as ``[..., "Ġ(", "A"]``: punctuation and letters are
separate pre-tokens, so the letter is always its own token (``"A"`` = 49,
``"B"`` = 50, not ``"ĠA"``). The engine does not hard-code this: for each prefix
it encodes ``prefix`` and ``prefix + letter`` and takes the one extra token id
when the first is a strict prefix of the second; only if the letter would merge
with the prefix's last token does it fall back to the bare letter's own token id
(and log a warning).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from charter.core.engine import ChoiceLogprobs, Conversation, SamplingParams

log = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}

_SENTINEL = "\ue000charter-msg-{}\ue001"
_SENTINEL_RE = re.compile("\ue000charter-msg-(\\d+)\ue001")


def _buckets(lengths: Sequence[int], size: int) -> list[list[int]]:
    """Indices sorted by length (stable), cut into chunks of at most ``size``."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + size] for i in range(0, len(order), size)]


def _common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    if not seqs:
        return 0
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for i in range(n):
        tok = first[i]
        if any(s[i] != tok for s in seqs):
            return i
    return n


class TransformersEngine:
    """A causal LM loaded with transformers, serving batched chat requests."""

    engine_name = "transformers"

    def __init__(
        self,
        model_path: Path | str,
        *,
        model_name: str,
        device: str = "cpu",
        dtype: str = "float32",
        max_batch_size: int = 16,
        revision: str | None = None,
        prefix_reuse: bool = True,
        min_shared_prefix: int = 32,
        num_threads: int | None = None,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if num_threads is not None:
            # Process-wide; one engine per worker process. With several workers on one
            # machine, threads x workers must not exceed the cores: oversubscribed
            # OpenMP threads spin and slow a CPU forward pass down many times over.
            torch.set_num_threads(num_threads)
        if dtype not in _DTYPES:
            raise ValueError(f"unsupported dtype {dtype!r}; use one of {sorted(_DTYPES)}")
        path = Path(model_path)
        self.model_name = model_name
        self.model_path = path
        self.device = torch.device(device)
        self.dtype = _DTYPES[dtype]
        self.max_batch_size = max_batch_size
        self.prefix_reuse = prefix_reuse
        """Reuse the KV cache of a shared token prefix in ``choice_logprobs``."""
        self.min_shared_prefix = min_shared_prefix
        """Shortest shared prefix (tokens) worth a separate forward pass."""
        if revision is None:
            from charter.model_store import model_revision

            revision = model_revision(path)
        self.model_revision = revision

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.chat_template is None:
            raise ValueError(f"model {model_name!r} at {path} has no chat template")
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype)
        self.model.to(self.device)
        self.model.eval()

        tok = self.tokenizer
        specials = list(tok.all_special_tokens)
        for _, added in sorted(tok.added_tokens_decoder.items()):
            if added.special:
                specials.append(added.content)
        self.special_tokens: tuple[str, ...] = tuple(dict.fromkeys(s for s in specials if s))

        eos: list[int] = []
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        if isinstance(gen_eos, int):
            eos.append(gen_eos)
        elif gen_eos:
            eos.extend(int(e) for e in gen_eos)
        if tok.eos_token_id is not None:
            eos.append(int(tok.eos_token_id))
        # The chat template's end-of-turn marker and the document end token also stop a turn.
        for candidate in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"):
            tid = tok.convert_tokens_to_ids(candidate)
            if isinstance(tid, int) and tid >= 0 and tok.convert_ids_to_tokens(tid) == candidate:
                eos.append(tid)
        self.eos_token_ids: tuple[int, ...] = tuple(dict.fromkeys(eos))
        if not self.eos_token_ids:
            raise ValueError(f"model {model_name!r}: tokenizer has no end-of-sequence token")
        pad = tok.pad_token_id
        self.pad_token_id: int = int(pad) if pad is not None else self.eos_token_ids[0]
        self.max_positions: int | None = getattr(
            self.model.config.get_text_config(), "max_position_embeddings", None
        )
        self._letter_ids: dict[tuple[str, str], int] = {}

    # ------------------------------------------------------------------ tokenisation

    def _render(self, conversation: Conversation) -> str:
        messages = [{"role": m["role"], "content": m["content"]} for m in conversation]
        for m in messages:
            if not isinstance(m["content"], str) or not isinstance(m["role"], str):
                raise TypeError("message role and content must be strings")
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return str(text)

    def _encode(self, text: str, *, split_special: bool = False) -> list[int]:
        ids = self.tokenizer(
            text, add_special_tokens=False, split_special_tokens=split_special
        ).input_ids
        return list(ids)

    def encode_prompt(self, conversation: Conversation, suffix: str = "") -> list[int]:
        """Token ids of the chat prompt (with generation prompt) followed by ``suffix``.

        Text inside message contents never becomes a control token: when a content
        contains a special-token string, the template is rendered with sentinels in
        place of the contents, the template text is tokenised normally and each
        content with ``split_special_tokens=True``. Without such strings this is the
        plain tokenisation of the rendered prompt.
        """
        text = self._render(conversation) + suffix
        contents = [m["content"] for m in conversation]
        if not any(s in c for c in contents for s in self.special_tokens):
            return self._encode(text)
        masked = [
            {"role": m["role"], "content": _SENTINEL.format(i)} for i, m in enumerate(conversation)
        ]
        skeleton = str(
            self.tokenizer.apply_chat_template(masked, add_generation_prompt=True, tokenize=False)
        )
        pieces = _SENTINEL_RE.split(skeleton + suffix)
        # pieces alternate: template text, message index, template text, ...
        indices = [int(p) for p in pieces[1::2]]
        rebuilt = "".join(contents[int(p)] if k % 2 else p for k, p in enumerate(pieces))
        if indices != list(range(len(contents))) or rebuilt != text:
            raise ValueError(
                "message content contains control tokens and the chat template cannot be "
                "split safely; neutralise special tokens before calling the engine"
            )
        ids: list[int] = []
        for k, piece in enumerate(pieces):
            if k % 2:
                ids.extend(self._encode(contents[int(piece)], split_special=True))
            elif piece:
                ids.extend(self._encode(piece))
        return ids

    def choice_token_id(self, assistant_prefix: str, letter: str) -> int:
        """Token id of ``letter`` as the next token after ``assistant_prefix`` (see module doc)."""
        key = (assistant_prefix, letter)
        if key in self._letter_ids:
            return self._letter_ids[key]
        if not letter:
            raise ValueError("choice letters must be non-empty")
        base = self._encode(assistant_prefix)
        full = self._encode(assistant_prefix + letter)
        if len(full) == len(base) + 1 and full[: len(base)] == base:
            tid = full[-1]
        else:
            alone = self._encode(letter)
            if len(alone) != 1:
                raise ValueError(f"choice {letter!r} is not a single token for this tokenizer")
            tid = alone[0]
            log.warning(
                "choice %r merges with the end of prefix %r; using its bare token id %d",
                letter,
                assistant_prefix[-20:],
                tid,
            )
        self._letter_ids[key] = tid
        return tid

    # ------------------------------------------------------------------ generation

    @torch.inference_mode()
    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[str]:
        """Continue each conversation with one assistant turn; texts in input order."""
        if not conversations:
            return []
        prompts = [self.encode_prompt(c) for c in conversations]
        max_new = params.max_tokens
        if self.max_positions:
            longest = max(len(p) for p in prompts)
            if longest >= self.max_positions:
                raise ValueError(
                    f"prompt of {longest} tokens exceeds the context of model "
                    f"{self.model_name!r} ({self.max_positions})"
                )
            max_new = min(max_new, self.max_positions - longest)

        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new,
            "eos_token_id": list(self.eos_token_ids),
            "pad_token_id": self.pad_token_id,
        }
        if params.temperature > 0:
            kwargs.update(
                do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0
            )
        else:
            kwargs.update(do_sample=False)

        results: list[str] = [""] * len(prompts)
        devices: list[int] = []
        if self.device.type == "cuda":
            index = self.device.index
            devices = [index if index is not None else torch.cuda.current_device()]
        # Seeding inside fork_rng leaves the process-wide generator state untouched.
        with torch.random.fork_rng(devices=devices, device_type=self.device.type):
            if params.seed is not None:
                torch.manual_seed(params.seed)
            for bucket in _buckets([len(p) for p in prompts], self.max_batch_size):
                width = max(len(prompts[i]) for i in bucket)
                ids = torch.full((len(bucket), width), self.pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(bucket), width), dtype=torch.long)
                for row, i in enumerate(bucket):
                    p = prompts[i]
                    ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
                    mask[row, width - len(p) :] = 1
                out = self.model.generate(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    **kwargs,
                )
                new = out[:, width:].tolist()
                for row, i in enumerate(bucket):
                    toks = new[row]
                    for pos, t in enumerate(toks):
                        if t in self.eos_token_ids:
                            toks = toks[:pos]
                            break
                    results[i] = self.tokenizer.decode(toks, skip_special_tokens=True)
        return results

    # ------------------------------------------------------------------ scoring

    @torch.inference_mode()
    def choice_logprobs(
        self,
        conversations: Sequence[Conversation],
        assistant_prefixes: Sequence[str],
        choices: tuple[str, str] = ("A", "B"),
    ) -> list[ChoiceLogprobs]:
        """Log-probs of each choice letter as the next token after the assistant prefix."""
        if len(conversations) != len(assistant_prefixes):
            raise ValueError("conversations and assistant_prefixes differ in length")
        if not conversations:
            return []
        prompts = [
            self.encode_prompt(c, suffix=prefix)
            for c, prefix in zip(conversations, assistant_prefixes, strict=True)
        ]
        if self.max_positions and max(len(p) for p in prompts) > self.max_positions:
            raise ValueError(f"prompt exceeds the context of model {self.model_name!r}")
        letter_ids = [
            (self.choice_token_id(prefix, choices[0]), self.choice_token_id(prefix, choices[1]))
            for prefix in assistant_prefixes
        ]

        shared = 0
        if self.prefix_reuse and len(prompts) > 1:
            # Leave at least one token per row so every row has its own last position.
            shared = min(_common_prefix_len(prompts), min(len(p) for p in prompts) - 1)
            if shared < self.min_shared_prefix:
                shared = 0
        prefix_cache = None
        if shared:
            prefix_cache = self._prefix_cache(prompts[0][:shared])
            if prefix_cache is None:
                shared = 0

        results: list[ChoiceLogprobs | None] = [None] * len(prompts)
        suffixes = [p[shared:] for p in prompts]
        for bucket in _buckets([len(s) for s in suffixes], self.max_batch_size):
            last = self._last_logprobs([suffixes[i] for i in bucket], shared, prefix_cache)
            for row, i in enumerate(bucket):
                a_id, b_id = letter_ids[i]
                results[i] = ChoiceLogprobs(a=float(last[row, a_id]), b=float(last[row, b_id]))
        return [r for r in results if r is not None]

    def _prefix_cache(self, prefix: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Key/value tensors of ``prefix`` (batch 1) per layer, or None if not reusable."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        ids = torch.tensor([prefix], dtype=torch.long, device=self.device)
        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        layers = getattr(cache, "layers", None)
        if not layers or any(type(layer) is not DynamicLayer for layer in layers):
            return None  # sliding-window / hybrid caches: run without reuse
        return [(layer.keys, layer.values) for layer in layers]

    def _last_logprobs(
        self,
        rows: list[list[int]],
        shared: int,
        prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None,
    ) -> torch.Tensor:
        """Full-vocabulary log-softmax at each row's last token, shape (rows, vocab).

        Rows are left-padded so the last real token sits in the final column; with a
        shared prefix the padding sits between the cached prefix and the suffix and is
        masked out, and position ids continue from the prefix length.
        """
        from transformers import DynamicCache

        n = len(rows)
        width = max(len(r) for r in rows)
        ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for row, r in enumerate(rows):
            ids[row, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[row, width - len(r) :] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0) + shared
        kwargs: dict[str, Any] = {}
        if prefix_kv is not None:
            data = [(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in prefix_kv]
            kwargs["past_key_values"] = DynamicCache(data, config=self.model.config)
            kwargs["use_cache"] = True
            mask = torch.cat([torch.ones((n, shared), dtype=torch.long), mask], dim=1)
        else:
            kwargs["use_cache"] = False
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            logits_to_keep=1,
            **kwargs,
        )
        logits = out.logits[:, -1, :].float()
        return torch.log_softmax(logits, dim=-1).cpu()
