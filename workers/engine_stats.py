"""What a worker process's engines did, counted where the runner calls them.

The counters are cumulative since the process started; ``workers.heartbeat`` writes
them to the worker's row with each beat, and the gateway's ``/metrics`` exports them,
so a fleet of worker processes needs no port of its own to be scraped.

Tokens are those the engine itself counted while encoding the call (prompt tokens,
chat template included, and generated tokens: ``last_tokens``), so metering tokenizes
nothing again; an engine without a tokenizer (the scripted engine) counts words.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from charter.core.engine import ChoiceLogprobs, Conversation, Engine, SamplingParams
from workers.engines.wrapping import WrappedEngine

T = TypeVar("T")


@dataclass
class EngineStats:
    """Thread-safe counters; ``snapshot()`` is what a heartbeat writes."""

    calls: int = 0
    seconds: float = 0.0
    batch_items: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    current_chunk: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, seconds: float, batch: int, tokens_in: int, tokens_out: int) -> None:
        with self._lock:
            self.calls += 1
            self.seconds += seconds
            self.batch_items += batch
            self.tokens_in += tokens_in
            self.tokens_out += tokens_out

    def snapshot(self) -> dict[str, Any]:
        """The ``workers`` columns of these counters."""
        with self._lock:
            return {
                "current_chunk": self.current_chunk,
                "engine_calls": self.calls,
                "engine_seconds": self.seconds,
                "batch_items": self.batch_items,
                "tokens_in": self.tokens_in,
                "tokens_out": self.tokens_out,
            }


def _words(texts: Sequence[str]) -> int:
    return sum(len(t.split()) for t in texts if t)


def _contents(conversations: Sequence[Conversation]) -> list[str]:
    return [m.get("content", "") for c in conversations for m in c]


def call_tokens(engine: Engine, sent: Sequence[str], generated: Sequence[str]) -> tuple[int, int]:
    """(prompt tokens, generated tokens) of the call just made: what the engine counted
    while encoding (``last_tokens``: the chat template's tokens included, nothing is
    tokenized twice), or words for an engine that has no tokenizer (the scripted one)."""
    counted = getattr(engine, "last_tokens", None)
    if counted is not None:
        return counted
    return _words(sent), _words(generated)


class MeteredEngine(WrappedEngine):
    """An engine whose every call is counted into ``stats``; otherwise the engine itself."""

    def __init__(self, engine: Engine, stats: EngineStats) -> None:
        super().__init__(engine)
        self.stats = stats

    def _timed(self, call: Callable[[], T]) -> tuple[T, float]:
        start = time.perf_counter()
        result = call()
        return result, time.perf_counter() - start

    def generate(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams,
        *,
        seed: int | None = None,
    ) -> list[str]:
        texts, seconds = self._timed(lambda: self.inner.generate(conversations, params, seed=seed))
        tokens_in, tokens_out = call_tokens(self.inner, _contents(conversations), texts)
        self.stats.add(seconds, len(conversations), tokens_in, tokens_out)
        return texts

    def choice_logprobs(
        self,
        conversations: Sequence[Conversation],
        assistant_prefixes: Sequence[str],
        choices: tuple[str, str] = ("A", "B"),
    ) -> list[ChoiceLogprobs]:
        result, seconds = self._timed(
            lambda: self.inner.choice_logprobs(conversations, assistant_prefixes, choices)
        )
        sent = _contents(conversations) + list(assistant_prefixes)
        tokens_in, _ = call_tokens(self.inner, sent, ())
        self.stats.add(seconds, len(conversations), tokens_in, 0)
        return result
