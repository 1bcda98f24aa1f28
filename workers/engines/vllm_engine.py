"""vLLM backend for the :class:`charter.core.engine.Engine` interface.

One ``vllm.LLM`` per worker process. vLLM is imported lazily inside
:meth:`VLLMEngine.__init__` and is expected to live in its own virtual environment
(see ``scripts/setup-vllm-cpu.sh``): it pins transformers and fastapi, so it is
not a dependency of the main package.

Prompts are rendered and tokenised here by the rules shared with the transformers
engine (:mod:`workers.engines.chat_tokens`); vLLM receives token ids. Generation
and choice scoring therefore see exactly the same prompt tokens as the transformers
engine, and the same answer-letter and stop ids.

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

import contextlib
import gc
import importlib
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from charter.core.engine import ChoiceLogprobs, Conversation, SamplingParams
from charter.core.engine_config import EngineConfig
from workers.engines.chat_tokens import ChatTokens

log = logging.getLogger(__name__)

TOP_LOGPROBS = 20
"""Top-k log-probs requested per scored position (vLLM's default ``max_logprobs``)."""

PREFIX_CACHE_QUERIES_METRIC = "vllm:prefix_cache_queries"
PREFIX_CACHE_HITS_METRIC = "vllm:prefix_cache_hits"


class VLLMEngine:
    """A model served by vLLM's offline ``LLM`` class."""

    engine_name = "vllm"

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        model_name: str,
        config: EngineConfig | None = None,
        revision: str | None = None,
        seed: int = 0,
        **engine_kwargs: Any,
    ) -> None:
        """Load the model directory ``model_path`` into one ``vllm.LLM``, as configured by
        ``config`` (by default ``EngineConfig(engine="vllm")``).

        ``revision`` is the revision recorded with labels; by default it is
        computed from the directory (:func:`charter.model_store.model_revision`).
        The config's dtype, ``vllm_*`` knobs and prefix reuse (vLLM's automatic
        prefix caching, on unless ``"off"``) go to ``vllm.LLM``; on vLLM's CPU
        backend ``vllm_gpu_memory_utilization`` is the share of the NUMA node's
        memory reserved for the model and KV cache (0.3 suits a small machine).
        ``engine_kwargs`` go to ``vllm.LLM`` unchanged (benchmarks: they are not part
        of the config, so not of its hash). Stats logging is enabled by default so
        that :meth:`prefix_cache_stats` has data; pass ``disable_log_stats=True`` to
        turn it off.
        """
        config = config or EngineConfig(engine="vllm")
        if config.engine != self.engine_name:
            raise ValueError(f"a {config.engine!r} engine config given to the vLLM engine")
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

        self.config = config
        self.model_name = model_name
        if revision is None:
            from charter.model_store import model_revision

            revision = model_revision(path)
        self.model_revision = revision
        self.model_path = path
        self.max_model_len = config.vllm_max_model_len
        self._vllm = vllm
        self._llm = vllm.LLM(
            model=str(path),
            tokenizer=str(path),
            dtype=config.dtype,
            gpu_memory_utilization=config.vllm_gpu_memory_utilization,
            max_model_len=config.vllm_max_model_len,
            tensor_parallel_size=config.vllm_tensor_parallel_size,
            enable_prefix_caching=config.prefix_reuse != "off",
            seed=seed,
            **engine_kwargs,
        )
        self._tokenizer = self._llm.get_tokenizer()
        if getattr(self._tokenizer, "chat_template", None) is None:
            raise ValueError(f"model {model_name!r} at {path} has no chat template")
        self.chat = ChatTokens(self._tokenizer, _generation_eos(path))
        self.special_tokens = self.chat.special_tokens
        self.eos_token_ids = self.chat.eos_token_ids
        self.last_tokens: tuple[int, int] = (0, 0)
        """(prompt tokens, generated tokens) of the last call, for the worker's metrics."""
        if not self.eos_token_ids:
            raise ValueError(f"model {model_name!r}: tokenizer has no end-of-sequence token")
        self._log_stats = not engine_kwargs["disable_log_stats"]
        fields = getattr(vllm.SamplingParams, "__struct_fields__", ())
        self._has_logprob_token_ids = "logprob_token_ids" in fields

    # ------------------------------------------------------------------ prompts

    def encode_prompt(self, conversation: Conversation, suffix: str = "") -> list[int]:
        """Token ids of the chat prompt (with generation prompt) followed by ``suffix``,
        exactly the transformers engine's (:mod:`workers.engines.chat_tokens`), checked
        to fit ``vllm_max_model_len``."""
        ids = self.chat.encode_prompt(conversation, suffix)
        if not ids:
            raise ValueError("empty prompt")
        if len(ids) >= self.max_model_len:
            raise ValueError(
                f"prompt of {len(ids)} tokens does not fit max_model_len={self.max_model_len} "
                f"of model {self.model_name!r}"
            )
        return ids

    # ------------------------------------------------------------------ Engine

    def generate(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams,
        *,
        seed: int | None = None,
    ) -> list[str]:
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
                    seed=None if seed is None else seed + i,
                    stop_token_ids=list(self.eos_token_ids),
                )
            )
        outputs = self._llm.generate(prompts, sampling, use_tqdm=False)
        self.last_tokens = (
            sum(len(p["prompt_token_ids"]) for p in prompts),
            sum(len(out.outputs[0].token_ids) for out in outputs),
        )
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
        self.last_tokens = (sum(len(p["prompt_token_ids"]) for p in prompts), 0)
        results = []
        for out, (id_a, id_b) in zip(outputs, letter_ids, strict=True):
            step = (out.outputs[0].logprobs or [None])[0]
            results.append(ChoiceLogprobs(a=_lookup(step, id_a), b=_lookup(step, id_b)))
        return results

    def choice_token_id(self, assistant_prefix: str, letter: str) -> int:
        """Token id of ``letter`` as the next token after ``assistant_prefix``."""
        return self.chat.choice_token_id(assistant_prefix, letter)

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
        """Stop vLLM's engine and free what it held (best effort); the engine is unusable
        afterwards.

        The engine-core process that ``shutdown`` ends holds the weights and KV cache;
        run in-process, they go with the last reference to the ``LLM``, and the
        distributed state vLLM set up is torn down so that another model can load.
        """
        llm = getattr(self, "_llm", None)
        if llm is None:
            return
        self._llm = None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if callable(shutdown):
            try:
                shutdown()
            except Exception:  # the memory is freed below all the same, if it can be
                log.exception("vLLM's engine core did not shut down cleanly")
        del llm, core, shutdown
        try:
            parallel_state = importlib.import_module("vllm.distributed.parallel_state")
        except ImportError:
            parallel_state = None
        for name in ("destroy_model_parallel", "destroy_distributed_environment"):
            teardown = getattr(parallel_state, name, None)
            if callable(teardown):
                with contextlib.suppress(Exception):  # nothing was set up: nothing to undo
                    teardown()
        gc.collect()
        empty_cuda_cache()


def empty_cuda_cache() -> None:
    """Hand the CUDA caching allocator's free blocks back to the device, if torch has one."""
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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
