"""Build the engines a worker serves, once per worker process, from one EngineConfig."""

from __future__ import annotations

from charter.core.engine import Engine
from charter.core.engine_config import EngineConfig
from charter.model_store import model_revision, resolve_model
from charter.settings import Settings


def engine_config(settings: Settings) -> EngineConfig:
    """The settings' engine knobs as the one config every engine of the process gets.

    Settings have no prefix-reuse knob: the config's default (``"auto"``) applies.
    """
    return EngineConfig.model_validate(
        {
            "engine": settings.worker_engine,
            "dtype": settings.worker_dtype,
            "device": settings.worker_device,
            "max_batch_size": settings.worker_max_batch,
            "max_batch_tokens": settings.worker_max_batch_tokens,
            "max_generate_tokens": settings.worker_max_generate_tokens,
            "threads": settings.worker_threads,
            "vllm_gpu_memory_utilization": settings.vllm_gpu_memory_utilization,
            "vllm_max_model_len": settings.vllm_max_model_len,
            "vllm_tensor_parallel_size": settings.vllm_tensor_parallel_size,
        }
    )


def load_engines(settings: Settings, config: EngineConfig | None = None) -> dict[str, Engine]:
    """One engine per model of ``settings.worker_models``, all built with ``config``
    (by default :func:`engine_config` of the settings)."""
    config = config or engine_config(settings)
    engines = {name: _load(settings, config, name) for name in settings.worker_models}
    if settings.fault_delay_seconds or settings.fault_poison:
        from workers.engines.faults import FaultyEngine

        engines = {
            name: FaultyEngine(
                engine,
                delay_seconds=settings.fault_delay_seconds,
                poison=settings.fault_poison,
                poison_mode=settings.fault_poison_mode,
            )
            for name, engine in engines.items()
        }
    return engines


def _load(settings: Settings, config: EngineConfig, name: str) -> Engine:
    if config.engine == "scripted":
        from workers.engines.scripted import ScriptedEngine

        return ScriptedEngine(model_name=name, config=config)
    path = resolve_model(name, settings.models, settings.models_dir)
    if config.engine == "vllm":
        from workers.engines.vllm_engine import VLLMEngine

        return VLLMEngine(path, model_name=name, config=config, revision=model_revision(path))
    from workers.engines.transformers_engine import TransformersEngine

    return TransformersEngine(path, model_name=name, config=config, revision=model_revision(path))
