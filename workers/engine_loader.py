"""Build the engines a worker serves, once per worker process."""

from __future__ import annotations

from charter.core.engine import Engine
from charter.model_store import model_revision, resolve_model
from charter.settings import Settings


def load_engines(settings: Settings) -> dict[str, Engine]:
    engines = {name: _load(settings, name) for name in settings.worker_models}
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


def _load(settings: Settings, name: str) -> Engine:
    if settings.worker_engine == "scripted":
        from workers.engines.scripted import ScriptedEngine

        return ScriptedEngine(model_name=name)
    path = resolve_model(name, settings.models, settings.models_dir)
    if settings.worker_engine == "vllm":
        from workers.engines.vllm_engine import VLLMEngine

        return VLLMEngine(
            path,
            model_name=name,
            revision=model_revision(path),
            dtype=settings.worker_dtype,
            gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
            max_model_len=settings.vllm_max_model_len,
            tensor_parallel_size=settings.vllm_tensor_parallel_size,
        )
    from workers.engines.transformers_engine import TransformersEngine

    return TransformersEngine(
        path,
        model_name=name,
        device=settings.worker_device,
        dtype=settings.worker_dtype,
        max_batch_size=settings.worker_max_batch,
        max_batch_tokens=settings.worker_max_batch_tokens,
        max_generate_tokens=settings.worker_max_generate_tokens,
        revision=model_revision(path),
        num_threads=settings.worker_threads,
    )
