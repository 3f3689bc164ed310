"""The Provider's cache of what it read from run storage: bounded in age and size, one read per miss.

Consumers poll their jobs' status; answering each poll from run storage would cost a database read
per poll. `ReadCache.get(key, load, lifetime)` answers from memory while an entry is fresh, and on a
miss lets exactly one caller read while the others asking for the same key at the same moment wait
for that read and share its answer (or its error). How long an entry stays fresh is the caller's
choice per value (`lifetime`): provider_api.dagster_jobs keeps finished jobs until something can
still change them and unfinished ones for a short bound. The cache is per process: every uvicorn
worker and every replica has its own, all reading the same storage, so none can be more wrong than
its own bound.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")

FOREVER = math.inf


class _Read(Generic[V]):
    """One read in flight: the callers that missed the same key wait on it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: V | None = None
        self.error: BaseException | None = None


class ReadCache(Generic[V]):
    """Entries keyed by `Hashable`, each fresh for the lifetime its value was given, at most
    `max_entries` of them (least recently used first out)."""

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("the cache needs room for at least one entry")
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[V, float]] = OrderedDict()
        self._reads: dict[Hashable, _Read[V]] = {}
        # Counters for the bench and the tests: how many callers were answered how.
        self.hits = 0
        self.loads = 0
        self.joined = 0

    def get(self, key: Hashable, load: Callable[[], V], lifetime: Callable[[V], float]) -> V:
        """The fresh value of `key`, else `load()`'s (stored for `lifetime(value)` seconds; 0 stores
        nothing). Concurrent misses for one key make one `load()` call; its error reaches them all and
        is not stored."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                if entry[1] > self._clock():
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return entry[0]
                del self._entries[key]
            read = self._reads.get(key)
            leader = read is None
            if read is None:
                read = self._reads[key] = _Read()
                self.loads += 1
            else:
                self.joined += 1
        if not leader:
            read.done.wait()
            if read.error is not None:
                raise read.error
            return read.value  # type: ignore[return-value]
        try:
            value = load()
        except BaseException as error:
            read.error = error
            raise
        else:
            read.value = value
            seconds = lifetime(value)
            with self._lock:
                if seconds > 0:
                    self._entries[key] = (value, self._clock() + seconds)
                    self._entries.move_to_end(key)
                    while len(self._entries) > self.max_entries:
                        self._entries.popitem(last=False)
            return value
        finally:
            with self._lock:
                self._reads.pop(key, None)
            read.done.set()

    def put(self, key: Hashable, value: V, seconds: float) -> None:
        """Store what this process knows first-hand (a run it has just launched)."""
        with self._lock:
            self._entries[key] = (value, self._clock() + seconds)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget(self, key: Hashable) -> None:
        """Drop `key`: this process has just changed what it holds (a stop, a submit)."""
        with self._lock:
            self._entries.pop(key, None)

    def forget_where(self, matches: Callable[[Hashable], bool]) -> None:
        with self._lock:
            for key in [key for key in self._entries if matches(key)]:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
