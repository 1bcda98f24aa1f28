"""The transformers backend of the :class:`~charter.core.engine.Engine` interface (CPU or GPU).

Every call is planned by a measured cost model (:mod:`workers.engines.batch_plan`):
rows are sorted by token length and split into buckets by dynamic programming under
a row cap (``max_batch_size``) and a token budget (``max_batch_tokens``: rows x
longest row); results are put back into input order. On a CPU each padding token
costs as much as a real one, so a call should carry as many rows as possible (both
A/B orders of a whole chunk): the more rows, the closer neighbours in length.

Answer-letter scoring (``choice_logprobs``) runs one forward pass per bucket. Rows
are right-padded with no attention mask (causal attention never lets a real token
see the padding after it), the backbone's hidden state is gathered at each row's
last real token and only those rows go through the output head. Feedback prompts
in one call may share a token prefix (constitution preamble, few-shot examples);
computing it once and expanding its KV cache over every bucket saves its tokens in
every row but makes each pass attend over it through an explicit mask. With
``prefix_reuse="auto"`` (the default of :class:`~charter.core.engine_config.EngineConfig`)
the cost model decides per call; ``"on"`` forces reuse whenever the shared prefix is at
least ``min_shared_prefix`` tokens, ``"off"`` never reuses. ``last_plan`` records what
the latest call did.

Prompts, answer-letter ids and stop ids follow the rules shared with the vLLM engine
(:mod:`workers.engines.chat_tokens`).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from charter.core.engine import ChoiceLogprobs, Conversation, SamplingParams
from charter.core.engine_config import EngineConfig
from workers.engines import batch_plan
from workers.engines.batch_plan import ForwardCost, Plan
from workers.engines.chat_tokens import ChatTokens
from workers.engines.sampling import NucleusFilter

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_REUSE: dict[str, bool | None] = {"auto": None, "on": True, "off": False}
"""``EngineConfig.prefix_reuse`` -> the planner's policy: None lets the cost model decide."""

RUNTIME_FIELDS = frozenset(
    {"max_batch_size", "max_batch_tokens", "max_generate_tokens", "prefix_reuse"}
)
"""Config fields :meth:`TransformersEngine.reconfigure` may change on a loaded engine; the
others (dtype, device, threads) take effect only when the model loads."""


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


@dataclass(frozen=True)
class CallPlan:
    """What one engine call did: for tests, benchmarks and logs."""

    operation: str
    rows: int
    tokens: int
    """Real prompt tokens of the call."""
    buckets: list[list[int]]
    padded_tokens: int
    """Tokens computed, padding and the shared prefix (once) included."""
    shared_prefix: int
    """Tokens every row of the call starts with."""
    reused_prefix: bool
    estimate_seconds: float
    """The cost model's estimate of the chosen plan."""
    estimate_without_reuse: float | None = None


class TransformersEngine:
    """A causal LM loaded with transformers, serving batched chat requests."""

    engine_name = "transformers"

    def __init__(
        self,
        model_path: Path | str,
        *,
        model_name: str,
        config: EngineConfig | None = None,
        revision: str | None = None,
        min_shared_prefix: int = 16,
        cost: ForwardCost | None = None,
    ) -> None:
        """Load the model directory ``model_path`` as configured by ``config`` (by default
        ``EngineConfig()``: float32 on the CPU).

        ``revision`` is the revision recorded with labels; by default it is computed
        from the directory (:func:`charter.model_store.model_revision`).
        ``min_shared_prefix`` and ``cost`` tune the planner (tests and benchmarks).
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        config = config or EngineConfig()
        if config.engine != self.engine_name:
            raise ValueError(f"a {config.engine!r} engine config given to the transformers engine")
        if config.threads is not None:
            # Process-wide; one engine per worker process. With several workers on one
            # machine, threads x workers must not exceed the cores: oversubscribed
            # OpenMP threads spin and slow a CPU forward pass down many times over.
            torch.set_num_threads(config.threads)
        path = Path(model_path)
        self.config = config
        """What it was built with; the runtime fields may change (:meth:`reconfigure`)."""
        self.model_name = model_name
        self.model_path = path
        self.device = torch.device(config.device)
        self.dtype = _DTYPES[config.dtype]
        self.min_shared_prefix = min_shared_prefix
        """Shortest shared prefix (tokens) ever run as a pass of its own."""
        self.cost = cost or (
            batch_plan.CUDA_COST if self.device.type == "cuda" else batch_plan.CPU_COST
        )
        """The cost model that plans buckets and decides prefix reuse."""
        self.last_plan: CallPlan | None = None
        self.last_tokens: tuple[int, int] = (0, 0)
        """(prompt tokens, generated tokens) of the last call, for the worker's metrics."""
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

        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        self.chat = ChatTokens(self.tokenizer, gen_eos)
        self.special_tokens: tuple[str, ...] = self.chat.special_tokens
        self.eos_token_ids: tuple[int, ...] = self.chat.eos_token_ids
        if not self.eos_token_ids:
            raise ValueError(f"model {model_name!r}: tokenizer has no end-of-sequence token")
        pad = self.tokenizer.pad_token_id
        self.pad_token_id: int = int(pad) if pad is not None else self.eos_token_ids[0]
        self.max_positions: int | None = getattr(
            self.model.config.get_text_config(), "max_position_embeddings", None
        )
        self._gather = self._gather_matches_model()

    # ------------------------------------------------------------------ configuration

    @property
    def max_batch_size(self) -> int:
        """Most rows in one forward pass."""
        return self.config.max_batch_size

    @property
    def max_batch_tokens(self) -> int:
        """Token budget of one scoring pass: rows x longest row."""
        return self.config.max_batch_tokens

    @property
    def max_generate_tokens(self) -> int:
        """Cache budget of one generation bucket: rows x (longest prompt + new tokens)."""
        return self.config.max_generate_tokens

    def reconfigure(self, **changes: Any) -> EngineConfig:
        """Change runtime fields (:data:`RUNTIME_FIELDS`) of the loaded engine; the new
        config, which labels then record. Load-time fields need a new engine."""
        fixed = set(changes) - RUNTIME_FIELDS
        if fixed:
            raise ValueError(f"{sorted(fixed)} take effect only when the model loads")
        self.config = self.config.replace(**changes)
        return self.config

    def close(self) -> None:
        """Drop the model and hand its freed CUDA memory back: unusable afterwards."""
        if getattr(self, "model", None) is None:
            return
        self.model = None
        gc.collect()  # the weights go only once nothing refers to them
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ tokenisation

    def encode_prompt(self, conversation: Conversation, suffix: str = "") -> list[int]:
        """Token ids of the chat prompt (with generation prompt) followed by ``suffix``;
        message contents never become control tokens (:mod:`workers.engines.chat_tokens`)."""
        return self.chat.encode_prompt(conversation, suffix)

    def choice_token_id(self, assistant_prefix: str, letter: str) -> int:
        """Token id of ``letter`` as the next token after ``assistant_prefix``."""
        return self.chat.choice_token_id(assistant_prefix, letter)

    # ------------------------------------------------------------------ generation

    @torch.inference_mode()
    def generate(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams,
        *,
        seed: int | None = None,
    ) -> list[str]:
        """Continue each conversation with one assistant turn; texts in input order.

        Buckets are planned for a prefill plus ``max_tokens`` decode steps each: a
        decode step costs mostly its fixed per-pass cost, so rows of different
        lengths share a bucket unless padding them would cost more than the extra
        steps of another bucket. Rows are left-padded (generation appends on the right).
        """
        from transformers import LogitsProcessorList

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
            # generate's own top-p warper sorts the whole vocabulary per row per step;
            # NucleusFilter keeps the same tokens from a top-k (see its module doc).
            nucleus = NucleusFilter(params.temperature, params.top_p)
            kwargs.update(
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                logits_processor=LogitsProcessorList([nucleus]),
            )
        else:
            kwargs.update(do_sample=False)

        lengths = [len(p) for p in prompts]
        planned = batch_plan.plan(
            lengths,
            self.cost,
            max_rows=self.max_batch_size,
            max_tokens=self.max_generate_tokens,
            steps=max_new,
        )
        self.last_plan = CallPlan(
            "generate", len(prompts), sum(lengths), planned.buckets, planned.padded_tokens,
            0, False, planned.seconds,
        )  # fmt: skip
        results: list[str] = [""] * len(prompts)
        generated = 0
        devices: list[int] = []
        if self.device.type == "cuda":
            index = self.device.index
            devices = [index if index is not None else torch.cuda.current_device()]
        # Seeding inside fork_rng leaves the process-wide generator state untouched.
        with torch.random.fork_rng(devices=devices, device_type=self.device.type):
            if seed is not None:
                torch.manual_seed(seed)
            for bucket in planned.buckets:
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
                    generated += len(toks)
                    results[i] = self.tokenizer.decode(toks, skip_special_tokens=True)
        self.last_tokens = (sum(lengths), generated)
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
        shared, planned = self._plan_scoring(prompts)
        prefix_cache = None
        if shared:
            prefix_cache = self._prefix_cache(prompts[0][:shared])
            if prefix_cache is None:  # this cache type cannot be shared: plan without it
                shared, planned = self._plan_scoring(prompts, reuse=False)

        results: list[ChoiceLogprobs | None] = [None] * len(prompts)
        for bucket in planned.buckets:
            last = self._last_logprobs([prompts[i][shared:] for i in bucket], shared, prefix_cache)
            for row, i in enumerate(bucket):
                a_id, b_id = letter_ids[i]
                results[i] = ChoiceLogprobs(a=float(last[row, a_id]), b=float(last[row, b_id]))
        return [r for r in results if r is not None]

    def _plan_scoring(
        self, prompts: list[list[int]], *, reuse: bool | None = None
    ) -> tuple[int, Plan]:
        """The prefix tokens to compute once (0: none) and the bucket plan."""
        lengths = [len(p) for p in prompts]
        # Leave at least one token per row so every row has its own last position.
        shared = min(_common_prefix_len(prompts), min(lengths) - 1) if len(prompts) > 1 else 0
        policy = _REUSE[self.config.prefix_reuse] if reuse is None else reuse
        limits = {"max_rows": self.max_batch_size, "max_tokens": self.max_batch_tokens}
        if policy is False or shared < self.min_shared_prefix:
            full = batch_plan.plan(lengths, self.cost, **limits)
            use, chosen, without = False, full, None
        else:
            pays, full, with_reuse = batch_plan.reuse_pays(lengths, shared, self.cost, **limits)
            use = policy is True or pays
            chosen, without = (with_reuse if use else full), full.seconds
        self.last_plan = CallPlan(
            "choice_logprobs", len(prompts), sum(lengths), chosen.buckets, chosen.padded_tokens,
            shared, use, chosen.seconds, without,
        )  # fmt: skip
        self.last_tokens = (sum(lengths), 0)
        return (shared if use else 0), chosen

    def _backbone_and_head(self) -> tuple[Any, Any]:
        return self.model.get_decoder(), self.model.get_output_embeddings()

    def _gather_matches_model(self) -> bool:
        """Whether backbone + output head at chosen positions gives the model's logits.

        True for plain causal LMs; False where the model post-processes its logits
        (soft-capping, scaling), and scoring then keeps the full model's head.
        """
        try:
            backbone, head = self._backbone_and_head()
        except (AttributeError, NotImplementedError):
            return False
        if backbone is None or head is None or backbone is self.model:
            return False
        ids = torch.tensor([[self.pad_token_id, *range(10, 17)]], device=self.device)
        with torch.inference_mode():
            reference = self.model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[:, -1]
            hidden = backbone(input_ids=ids, use_cache=False).last_hidden_state[:, -1]
            mine = head(hidden)
        return bool(torch.allclose(reference.float(), mine.float(), atol=1e-4, rtol=1e-4))

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

        Rows are right-padded and run without an attention mask: under causal
        attention a real token never sees the padding after it, so no mask is needed
        and SDPA takes its causal kernel (no prefix) instead of materialising a
        padded mask. After a cached prefix, position ids continue from its length.
        """
        from transformers import DynamicCache

        n = len(rows)
        width = max(len(r) for r in rows)
        ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        for row, r in enumerate(rows):
            ids[row, : len(r)] = torch.tensor(r, dtype=torch.long)
        last = torch.tensor([len(r) - 1 for r in rows], device=self.device)
        kwargs: dict[str, Any] = {"use_cache": False}
        if prefix_kv is not None:
            data = [(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in prefix_kv]
            kwargs["past_key_values"] = DynamicCache(data, config=self.model.config)
            kwargs["use_cache"] = True
        ids = ids.to(self.device)
        picked = torch.arange(n, device=self.device)
        if self._gather:
            backbone, head = self._backbone_and_head()
            hidden = backbone(input_ids=ids, **kwargs).last_hidden_state
            logits = head(hidden[picked, last])
        else:
            # Only the distinct last positions go through the model's own head.
            positions, index = torch.unique(last, return_inverse=True)
            out = self.model(input_ids=ids, logits_to_keep=positions, **kwargs)
            logits = out.logits[picked, index]
        return torch.log_softmax(logits.float(), dim=-1).cpu()
