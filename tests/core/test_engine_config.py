"""EngineConfig: bounds, canonical dtypes, and a hash that moves exactly with what an engine reads."""

from __future__ import annotations

import hashlib
import json

import pytest
from pydantic import ValidationError

from charter.core.engine import SamplingParams
from charter.core.engine_config import HASHED_FIELDS, EngineConfig
from charter.core.jobs import JobParams, JobType, samples

CHANGES = {
    "engine": "vllm",
    "dtype": "bfloat16",
    "device": "cuda:1",
    "max_batch_size": 8,
    "max_batch_tokens": 4096,
    "max_generate_tokens": 1024,
    "prefix_reuse": "off",
    "threads": 2,
    "vllm_gpu_memory_utilization": 0.5,
    "vllm_max_model_len": 2048,
    "vllm_tensor_parallel_size": 2,
}
"""A valid value different from the default, for every field."""


def test_every_field_is_described_and_covered_by_these_tests() -> None:
    fields = EngineConfig.model_fields
    assert set(CHANGES) == set(fields)
    assert all(info.description for info in fields.values())
    for engine, hashed in HASHED_FIELDS.items():
        assert set(hashed) <= set(fields) and "engine" in hashed, engine


@pytest.mark.parametrize("engine", sorted(HASHED_FIELDS))
def test_the_hash_changes_with_hashed_fields_only(engine: str) -> None:
    base = EngineConfig.model_validate({"engine": engine, "dtype": "float16"})
    assert base.ignored_fields() == tuple(f for f in CHANGES if f not in base.hashed_fields())
    for name, value in CHANGES.items():
        if name == "engine":
            continue
        changed = base.replace(**{name: value})
        assert getattr(changed, name) == value
        if name in base.hashed_fields():
            assert changed.compute_hash() != base.compute_hash(), (engine, name)
        else:
            assert changed.compute_hash() == base.compute_hash(), (engine, name)


def test_the_engine_is_always_hashed() -> None:
    configs = [EngineConfig.model_validate({"engine": e}) for e in HASHED_FIELDS]
    assert len({c.compute_hash() for c in configs}) == len(HASHED_FIELDS)


def test_threads_are_hashed_for_transformers_and_ignored_by_vllm() -> None:
    # A CPU reduction over more threads sums in another order: threads can move numbers.
    assert "threads" in EngineConfig().hashed_fields()
    assert "threads" in EngineConfig(engine="vllm").ignored_fields()


def test_the_hash_is_sha256_of_the_canonical_json_of_the_hashed_fields() -> None:
    config = EngineConfig(engine="scripted", device="cuda")
    expected = hashlib.sha256(json.dumps({"engine": "scripted"}).replace(" ", "").encode())
    assert config.compute_hash() == expected.hexdigest()[:16]
    assert len(EngineConfig().compute_hash()) == 16


def test_dtype_spellings_are_one_value_and_hash_alike() -> None:
    for alias, name in [("fp32", "float32"), ("float", "float32"), ("HALF", "float16")]:
        assert EngineConfig.model_validate({"dtype": alias}).dtype == name
    bf16 = EngineConfig.model_validate({"dtype": "bf16"})
    assert bf16 == EngineConfig(dtype="bfloat16")
    assert bf16.compute_hash() == EngineConfig(dtype="bfloat16").compute_hash()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"engine": "tgi"}, "engine"),
        ({"dtype": "int8"}, "dtype"),
        ({"device": "cuda 1"}, "device"),
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_batch_size": 1025}, "max_batch_size"),
        ({"max_batch_tokens": 0}, "max_batch_tokens"),
        ({"max_generate_tokens": 0}, "max_generate_tokens"),
        ({"prefix_reuse": True}, "prefix_reuse"),
        ({"threads": 0}, "threads"),
        ({"vllm_gpu_memory_utilization": 0}, "vllm_gpu_memory_utilization"),
        ({"vllm_gpu_memory_utilization": 1.5}, "vllm_gpu_memory_utilization"),
        ({"vllm_max_model_len": 16}, "vllm_max_model_len"),
        ({"vllm_tensor_parallel_size": 0}, "vllm_tensor_parallel_size"),
        ({"max_batch": 4}, "max_batch"),
    ],
)
def test_out_of_bounds_values_name_their_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        EngineConfig.model_validate(changes)
    assert [e["loc"] for e in caught.value.errors()] == [(field,)]


def test_auto_dtype_is_vllms_only() -> None:
    assert EngineConfig(engine="vllm", dtype="auto").dtype == "auto"
    with pytest.raises(ValidationError, match="vLLM's"):
        EngineConfig(dtype="auto")


def test_the_config_is_frozen() -> None:
    config = EngineConfig()
    with pytest.raises(ValidationError):
        config.threads = 4  # type: ignore[misc]
    assert config.replace(threads=4).threads == 4 and config.threads is None
    with pytest.raises(ValidationError):
        config.replace(threads=0)


# --------------------------------------------------------------------------- sampling


def test_one_sampling_type_with_the_apis_bounds() -> None:
    assert JobParams.model_fields["sampling"].annotation is SamplingParams
    assert JobParams().sampling == SamplingParams(max_tokens=192, temperature=0.7, top_p=0.95)
    for field, value in [
        ("max_tokens", 0),
        ("max_tokens", 4097),
        ("temperature", -0.1),
        ("temperature", 2.01),
        ("top_p", 0.0),
        ("top_p", 1.01),
        ("seed", 3),  # the seed is per call, not a sampling parameter of the job
    ]:
        with pytest.raises(ValidationError) as caught:
            JobParams.model_validate({"sampling": {field: value}})
        assert [e["loc"] for e in caught.value.errors()] == [("sampling", field)]
    SamplingParams(max_tokens=4096, temperature=2.0, top_p=1.0)  # the bounds themselves pass


def test_the_sampling_hash_is_of_the_parameters() -> None:
    default = SamplingParams()
    payload = json.dumps(default.model_dump(), sort_keys=True, separators=(",", ":"))
    assert default.compute_hash() == hashlib.sha256(payload.encode()).hexdigest()[:16]
    assert SamplingParams(temperature=0.7).compute_hash() == default.compute_hash()
    for change in ({"max_tokens": 64}, {"temperature": 0.0}, {"top_p": 0.9}):
        changed = SamplingParams.model_validate(change)
        assert changed.compute_hash() != default.compute_hash()


def test_which_labels_are_made_with_sampled_text() -> None:
    plain, cot = JobParams(), JobParams(chain_of_thought=True)
    for job_type in (JobType.SL_CAI, JobType.CRITIQUE, JobType.REVISE):
        assert samples(job_type, plain, pair_supplied=False)
    assert samples(JobType.RL_CAI, plain, pair_supplied=False)  # it samples the pair
    assert not samples(JobType.RL_CAI, plain, pair_supplied=True)
    assert not samples(JobType.COMPARE, plain, pair_supplied=True)
    assert samples(JobType.COMPARE, cot, pair_supplied=True)  # the reasoning is sampled
