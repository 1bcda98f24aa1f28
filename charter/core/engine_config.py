"""How a worker's inference engine is configured: one immutable value per worker process.

Built once from the settings (``workers.engine_loader.engine_config``) and handed to
every engine the process loads; each engine keeps it as ``engine.config``, and every
label records its :meth:`EngineConfig.compute_hash`, so a label names the exact
engine configuration that produced its numbers. Pure data: no settings, no torch.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from charter.core.constitution import canonical_json

EngineName = Literal["transformers", "vllm", "scripted"]
Dtype = Literal["auto", "float32", "float16", "bfloat16"]
PrefixReuse = Literal["auto", "on", "off"]

DTYPE_ALIASES = {
    "fp32": "float32",
    "float": "float32",
    "fp16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
}
"""Other spellings the engines accept, stored under one name so equal configs hash equal."""

HASHED_FIELDS: dict[str, tuple[str, ...]] = {
    # Everything the transformers engine reads can move its numbers: the dtype and the
    # device obviously; the row and token budgets choose the buckets, hence the padding
    # and the matrix shapes whose float sums round differently; prefix reuse computes
    # the shared prefix in a pass of its own; and the thread count too, because torch
    # splits a CPU reduction by threads (a float32 sum of 10M values over 1 and over 2
    # threads differs in its 7th significant digit), which can turn a greedy tie.
    "transformers": (
        "engine",
        "dtype",
        "device",
        "max_batch_size",
        "max_batch_tokens",
        "max_generate_tokens",
        "prefix_reuse",
        "threads",
    ),
    # vLLM's memory share sizes its KV cache and so which sequences run together
    # (its kernels are not batch invariant); the context length cuts generations;
    # tensor parallelism splits the matrix products; prefix caching skips prefills.
    "vllm": (
        "engine",
        "dtype",
        "prefix_reuse",
        "vllm_gpu_memory_utilization",
        "vllm_max_model_len",
        "vllm_tensor_parallel_size",
    ),
    # The scripted engine's outputs depend on its inputs only.
    "scripted": ("engine",),
}
"""Per engine, the fields that enter :meth:`EngineConfig.compute_hash`: exactly those the
engine reads. The others are ignored, because that engine never looks at them (e.g. the
vLLM knobs under transformers; vLLM picks its device and threads itself)."""


class EngineConfig(BaseModel):
    """Every engine setting that can change what a worker computes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: EngineName = Field(
        default="transformers",
        description="Backend: transformers (CPU or GPU), vllm, or scripted (no model, for tests).",
    )
    dtype: Dtype = Field(
        default="float32",
        description="Weights dtype; fp32/float, fp16/half and bf16 are accepted and stored "
        "as float32, float16, bfloat16. 'auto' (the checkpoint's own) is vLLM's only.",
    )
    device: str = Field(
        default="cpu",
        pattern=r"^[a-z]+(:[0-9]+)?$",
        max_length=32,
        description="transformers: a torch device, e.g. cpu, cuda, cuda:1 (vLLM picks its own).",
    )
    max_batch_size: int = Field(
        default=64, ge=1, le=1024, description="transformers: most rows in one forward pass."
    )
    max_batch_tokens: int = Field(
        default=2048,
        ge=1,
        le=1_048_576,
        description="transformers: token budget of one scoring pass (rows x longest row).",
    )
    max_generate_tokens: int = Field(
        default=32768,
        ge=1,
        le=16_777_216,
        description="transformers: cached tokens of one generation bucket "
        "(rows x (longest prompt + new tokens)).",
    )
    prefix_reuse: PrefixReuse = Field(
        default="auto",
        description="Reuse of a prefix the prompts of a call share. transformers: its KV "
        "cache computed once per scoring call, 'auto' when the cost model says it pays; "
        "vllm: automatic prefix caching, on unless 'off'.",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="transformers: torch's CPU threads (process-wide); keep threads x "
        "workers <= cores. None: torch's default.",
    )
    vllm_gpu_memory_utilization: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="vllm: share of the accelerator's memory (CPU backend: of the NUMA "
        "node's) reserved for the weights and KV cache.",
    )
    vllm_max_model_len: int = Field(
        default=4096, ge=256, le=1_048_576, description="vllm: context length, prompt + output."
    )
    vllm_tensor_parallel_size: int = Field(
        default=1, ge=1, le=64, description="vllm: devices one model is split over."
    )

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype_alias(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            return DTYPE_ALIASES.get(value, value)
        return value

    @model_validator(mode="after")
    def _auto_dtype_is_vllms(self) -> EngineConfig:
        if self.dtype == "auto" and self.engine == "transformers":
            raise ValueError("dtype 'auto' is vLLM's; the transformers engine needs one dtype")
        return self

    def hashed_fields(self) -> tuple[str, ...]:
        """The fields :meth:`compute_hash` covers for this engine (see ``HASHED_FIELDS``)."""
        return HASHED_FIELDS[self.engine]

    def ignored_fields(self) -> tuple[str, ...]:
        """The fields this engine never reads, left out of the hash."""
        hashed = set(self.hashed_fields())
        return tuple(name for name in type(self).model_fields if name not in hashed)

    def compute_hash(self) -> str:
        """16 hex digits of the sha256 of the canonical JSON of the hashed fields.

        Two workers whose configs differ only in fields their engine ignores (see
        ``HASHED_FIELDS``) get the same hash; any change that can move a number changes it.
        """
        values = self.model_dump(mode="json", include=set(self.hashed_fields()))
        return hashlib.sha256(canonical_json(values).encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> EngineConfig:
        """A copy with ``changes``, validated like a new config."""
        return type(self).model_validate(self.model_dump() | changes)
