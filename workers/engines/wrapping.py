"""An engine around another engine: what the platform wraps engines with (metering,
fault injection) keeps the inner engine's identity, configuration and extras."""

from __future__ import annotations

from typing import Any

from charter.core.engine import Engine
from charter.core.engine_config import EngineConfig


class WrappedEngine:
    """The inner engine's name, model, revision and special tokens, its configuration,
    and any attribute it has beyond the protocol (``last_plan``, ``last_tokens``, ...);
    a subclass changes only the calls it wraps."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.engine_name = inner.engine_name
        self.model_name = inner.model_name
        self.model_revision = inner.model_revision
        self.special_tokens = inner.special_tokens

    @property
    def config(self) -> EngineConfig:
        """The wrapped engine's: a wrapper changes timing, counting or failures, never
        results."""
        return self.inner.config

    def close(self) -> None:
        """Closes the wrapped engine: a wrapper holds no model of its own."""
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
