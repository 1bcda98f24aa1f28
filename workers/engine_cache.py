"""The ``run:<id>`` models a worker loads on demand (it serves ``run:*``), least recently
used first out.

Training runs finish after the workers started, so their models cannot all be listed
and loaded at start. A worker that serves ``run:*`` takes the runs' shared queue
(``charter.queue.RUN_QUEUE``) and loads a run's model when a chunk first needs it,
keeping up to ``worker_run_model_slots`` of them. The models it lists are pinned: loaded
at start and never evicted.

A full cache evicts before it loads: the engine is closed and collected first, since
vLLM reserves its share of the GPU (0.9 by default) for the model it holds, which leaves
no room for a second one next to it.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping

from charter.core.engine import Engine

log = logging.getLogger(__name__)


class RunModelCache:
    """An LRU of engines for the run models a worker does not pin; ``get`` loads on a miss."""

    def __init__(
        self,
        load: Callable[[str], Engine],
        slots: int = 1,
        pinned: Mapping[str, Engine] | None = None,
    ) -> None:
        """``load``: model name -> engine (raises when it cannot: the chunk's items are
        given back with the error). ``pinned``: engines loaded at start, which ``get``
        returns as they are and which never count against the ``slots``."""
        if slots < 1:
            raise ValueError("a run model cache needs at least one slot")
        self._load = load
        self.slots = slots
        self._pinned = dict(pinned or {})
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        # One chunk at a time per pool process; the lock only makes a second caller
        # (a thread) wait for the load instead of loading the same model twice.
        self._lock = threading.Lock()

    def get(self, name: str) -> Engine:
        """The engine of ``name``: pinned, cached (now the most recently used), or loaded,
        after the least recently used ones were evicted to free a slot."""
        if name in self._pinned:
            return self._pinned[name]
        with self._lock:
            engine = self._engines.get(name)
            if engine is not None:
                self._engines.move_to_end(name)
                return engine
            while len(self._engines) >= self.slots:
                self._evict()
            log.info("loading run model %s on demand", name)
            try:
                engine = self._load(name)
            except BaseException:
                gc.collect()  # what a failed load left allocated, before the next try
                raise
            self._engines[name] = engine
            return engine

    @property
    def loaded(self) -> list[str]:
        """The cached (not pinned) models, least recently used first."""
        with self._lock:
            return list(self._engines)

    def close(self) -> None:
        """Evict every cached model (the pinned ones are the caller's)."""
        with self._lock:
            while self._engines:
                self._evict()

    def _evict(self) -> None:
        name, engine = self._engines.popitem(last=False)
        log.info("unloading run model %s to free a slot", name)
        try:
            engine.close()
        except Exception:  # it is dropped all the same; the collection frees what it can
            log.exception("closing the engine of %s failed", name)
        del engine
        gc.collect()
