"""Build the engines a worker serves, once per worker process, from one EngineConfig."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session

from charter.core.artifact_paths import OutsideStore
from charter.core.engine import Engine
from charter.core.engine_config import EngineConfig
from charter.core.jobs import RUN_MODEL_PREFIX, RUN_MODELS, RunStatus, run_of_model
from charter.db.models import TrainingRun
from charter.db.session import session_factory
from charter.model_store import in_run_folder, model_revision, resolve_model
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


def run_model_dir(sessions: Callable[[], Session], settings: Settings, run_id: str) -> Path:
    """The model a completed training run made: its artifact, which must lie in that run's
    folder of this worker's artifact store (also after following symlinks) and hold a
    model directory. ``ValueError`` saying why not."""
    with sessions() as session:
        run = session.get(TrainingRun, run_id)
    name = f"{RUN_MODEL_PREFIX}{run_id}"
    if run is None or run.status != RunStatus.COMPLETED or not run.artifact_uri:
        raise ValueError(f"model {name!r}: no completed training run with a model artifact")
    scores = {"pm": "preference model", "classifier": "classifier"}.get(run.type)
    if scores is not None:
        raise ValueError(f"model {name!r} is a {scores}, not one that writes")
    folder = settings.artifacts_dir.resolve() / "runs" / run_id
    try:
        path = in_run_folder(run.artifact_uri, folder)
    except OutsideStore as exc:
        raise ValueError(f"model {name!r}: its artifact is not in {folder} ({exc})") from None
    if not (path / "config.json").is_file():
        raise ValueError(f"model {name!r}: {path} has no config.json (is the store mounted?)")
    return path


def load_engines(
    settings: Settings,
    config: EngineConfig | None = None,
    sessions: Callable[[], Session] | None = None,
) -> dict[str, Engine]:
    """One engine per model of ``settings.worker_models``, all built with ``config``
    (by default :func:`engine_config` of the settings). A ``run:<id>`` model is that
    run's artifact, found with ``sessions`` (by default the settings' database);
    ``run:*`` loads nothing here (the runner's ``RunModelCache`` loads on demand)."""
    config = config or engine_config(settings)
    find = run_finder(settings, sessions)
    return {
        name: build_engine(settings, config, name, find)
        for name in dict.fromkeys(settings.worker_models)
        if name != RUN_MODELS
    }


def run_finder(
    settings: Settings, sessions: Callable[[], Session] | None = None
) -> Callable[[str], Path]:
    """Run id -> its model directory (:func:`run_model_dir`), on ``sessions`` (by default
    the settings' database)."""

    def find(run_id: str) -> Path:
        return run_model_dir(sessions or session_factory(), settings, run_id)

    return find


def build_engine(
    settings: Settings, config: EngineConfig, name: str, find_run: Callable[[str], Path]
) -> Engine:
    """The engine of model ``name``, built with ``config``; a ``run:<id>`` model's
    directory comes from ``find_run``. Wrapped in the settings' fault injection when
    there is any."""
    engine = _load(settings, config, name, find_run)
    if settings.fault_delay_seconds or settings.fault_poison:
        from workers.engines.faults import FaultyEngine

        engine = FaultyEngine(
            engine,
            delay_seconds=settings.fault_delay_seconds,
            poison=settings.fault_poison,
            poison_mode=settings.fault_poison_mode,
        )
    return engine


def _load(
    settings: Settings, config: EngineConfig, name: str, find_run: Callable[[str], Path]
) -> Engine:
    if config.engine == "scripted":
        from workers.engines.scripted import ScriptedEngine

        return ScriptedEngine(model_name=name, config=config)
    run_id = run_of_model(name)
    path = (
        resolve_model(name, settings.models, settings.models_dir)
        if run_id is None
        else find_run(run_id)
    )
    if config.engine == "vllm":
        from workers.engines.vllm_engine import VLLMEngine

        return VLLMEngine(path, model_name=name, config=config, revision=model_revision(path))
    from workers.engines.transformers_engine import TransformersEngine

    return TransformersEngine(path, model_name=name, config=config, revision=model_revision(path))
