"""Fault injection around any engine, for the reliability tests.

Wraps an engine to slow every call down (so a test can kill a worker in the
middle of a chunk) or to fail on items whose text contains a marker: by raising
(an engine error) or by exiting the process at once (a crash such as an
out-of-memory kill). Inert unless configured.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Literal

from charter.core.engine import ChoiceLogprobs, Conversation, Engine, SamplingParams
from workers.engines.wrapping import WrappedEngine


class PoisonError(RuntimeError):
    pass


class FaultyEngine(WrappedEngine):
    def __init__(
        self,
        inner: Engine,
        *,
        delay_seconds: float = 0.0,
        poison: str | None = None,
        poison_mode: Literal["raise", "exit"] = "raise",
    ) -> None:
        super().__init__(inner)
        self.delay_seconds = delay_seconds
        self.poison = poison
        self.poison_mode = poison_mode

    def _check(self, conversations: Sequence[Conversation]) -> None:
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        if self.poison and any(self.poison in m["content"] for c in conversations for m in c):
            if self.poison_mode == "exit":
                os._exit(137)  # what an OOM kill looks like from outside
            raise PoisonError(f"poison marker {self.poison!r} in the batch")

    def generate(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams,
        *,
        seed: int | None = None,
    ) -> list[str]:
        self._check(conversations)
        return self.inner.generate(conversations, params, seed=seed)

    def choice_logprobs(
        self,
        conversations: Sequence[Conversation],
        assistant_prefixes: Sequence[str],
        choices: tuple[str, str] = ("A", "B"),
    ) -> list[ChoiceLogprobs]:
        self._check(conversations)
        return self.inner.choice_logprobs(conversations, assistant_prefixes, choices)
