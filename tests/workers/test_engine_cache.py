"""The worker's LRU of on-demand run models: what it keeps, what it evicts, and that an
evicted engine is closed before the next one loads (vLLM leaves no room for two)."""

from __future__ import annotations

import pytest

from charter.core.engine import Engine
from workers.engine_cache import RunModelCache
from workers.engines.faults import FaultyEngine
from workers.engines.scripted import ScriptedEngine


class Recorder:
    """A loader of scripted engines that writes every load and close into one log."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def load(self, name: str) -> Engine:
        self.events.append(("load", name))
        recorder = self

        class Recorded(ScriptedEngine):
            def close(self) -> None:
                recorder.events.append(("close", self.model_name))
                super().close()

        return Recorded(model_name=name)


def test_a_miss_loads_and_a_hit_does_not() -> None:
    recorder = Recorder()
    cache = RunModelCache(recorder.load, slots=1)
    first = cache.get("run:a")
    assert cache.get("run:a") is first
    assert recorder.events == [("load", "run:a")]
    assert cache.loaded == ["run:a"]


def test_the_evicted_engine_is_closed_before_the_next_load() -> None:
    recorder = Recorder()
    cache = RunModelCache(recorder.load, slots=1)
    a = cache.get("run:a")
    cache.get("run:b")
    assert recorder.events == [("load", "run:a"), ("close", "run:a"), ("load", "run:b")]
    assert isinstance(a, ScriptedEngine) and a.closed
    assert cache.loaded == ["run:b"]


def test_the_least_recently_used_goes_first() -> None:
    recorder = Recorder()
    cache = RunModelCache(recorder.load, slots=2)
    cache.get("run:a")
    cache.get("run:b")
    cache.get("run:a")  # now b is the least recently used
    cache.get("run:c")
    assert recorder.events == [
        ("load", "run:a"),
        ("load", "run:b"),
        ("close", "run:b"),
        ("load", "run:c"),
    ]
    assert cache.loaded == ["run:a", "run:c"]


def test_two_slots_keep_two_models() -> None:
    recorder = Recorder()
    cache = RunModelCache(recorder.load, slots=2)
    for name in ("run:a", "run:b", "run:a", "run:b"):
        cache.get(name)
    assert recorder.events == [("load", "run:a"), ("load", "run:b")]
    assert sorted(cache.loaded) == ["run:a", "run:b"]


def test_pinned_engines_are_served_and_never_evicted() -> None:
    recorder = Recorder()
    pinned = ScriptedEngine(model_name="run:p")
    cache = RunModelCache(recorder.load, slots=1, pinned={"run:p": pinned})
    for name in ("run:a", "run:p", "run:b", "run:p", "run:c"):
        engine = cache.get(name)
        if name == "run:p":
            assert engine is pinned
    assert not pinned.closed
    assert ("load", "run:p") not in recorder.events
    assert cache.loaded == ["run:c"]  # the one slot turned over; the pinned one stayed
    cache.close()
    assert cache.loaded == [] and not pinned.closed


def test_a_failed_load_leaves_the_slot_free_and_is_tried_again() -> None:
    calls: list[str] = []

    def load(name: str) -> Engine:
        calls.append(name)
        if len(calls) == 2:
            raise ValueError(f"model {name!r}: no completed training run with a model artifact")
        return ScriptedEngine(model_name=name)

    cache = RunModelCache(load, slots=1)
    a = cache.get("run:a")
    with pytest.raises(ValueError, match="no completed training run"):
        cache.get("run:b")
    assert isinstance(a, ScriptedEngine) and a.closed, "evicted before the load was tried"
    assert cache.loaded == []
    assert cache.get("run:b").model_name == "run:b"
    assert calls == ["run:a", "run:b", "run:b"]


def test_a_wrapped_engine_closes_the_one_it_wraps() -> None:
    inner = ScriptedEngine(model_name="run:a")
    cache = RunModelCache(lambda name: FaultyEngine(inner, delay_seconds=0.0), slots=1)
    cache.get("run:a")
    cache.close()
    assert inner.closed


def test_no_slot_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        RunModelCache(lambda name: ScriptedEngine(model_name=name), slots=0)
