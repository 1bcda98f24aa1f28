"""Build the engines a worker serves, once per worker process."""

from __future__ import annotations

from charter.core.engine import Engine
from charter.model_store import model_revision, resolve_model
from charter.settings import Settings


def load_engines(settings: Settings) -> dict[str, Engine]:
    engines: dict[str, Engine] = {}
    for name in settings.worker_models:
        if settings.worker_engine == "scripted":
            from workers.engines.scripted import ScriptedEngine

            engines[name] = ScriptedEngine(
                model_name=name,
                delay_seconds=settings.scripted_delay_seconds,
                poison=settings.scripted_poison,
                poison_mode=settings.scripted_poison_mode,
            )
            continue
        path = resolve_model(name, settings.models, settings.models_dir)
        if settings.worker_engine == "vllm":
            from workers.engines.vllm_engine import VLLMEngine

            engines[name] = VLLMEngine(
                path,
                model_name=name,
                revision=model_revision(path),
                dtype=settings.worker_dtype,
                gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
                max_model_len=settings.vllm_max_model_len,
                tensor_parallel_size=settings.vllm_tensor_parallel_size,
            )
        else:
            from workers.engines.transformers_engine import TransformersEngine

            engines[name] = TransformersEngine(
                path,
                model_name=name,
                device=settings.worker_device,
                dtype=settings.worker_dtype,
                max_batch_size=settings.worker_max_batch,
                revision=model_revision(path),
            )
    return engines
