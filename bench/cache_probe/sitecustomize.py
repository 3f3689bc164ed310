"""Bench-only: how each Provider process's status cache answered, for bench/provider_api.py.

bench/provider_api.py starts the stack with this folder first on PYTHONPATH and
C2D_BENCH_CACHE_PROBE naming a folder, so every Python process of the stack imports this file at
start. In a process that builds a `provider_api.status_cache.ReadCache` (only the Provider's server
processes do), a daemon thread writes the counters of its caches (hits, loads, joined, entries),
summed, to `<folder>/<pid>.json` every PERIOD seconds. Without the variable nothing is imported or
patched. The Provider has no route for its counters, and the bench needs them per server process:
each uvicorn worker has its own cache.
"""

from __future__ import annotations

import os

PERIOD = 0.05


def _install(folder: str) -> None:
    import json
    import threading
    import time
    import weakref

    try:
        from provider_api import status_cache
    except ImportError:  # a process without the project on its path
        return

    caches: weakref.WeakSet[status_cache.ReadCache[object]] = weakref.WeakSet()
    started = threading.Event()
    original_init = status_cache.ReadCache.__init__

    def write() -> None:
        target = os.path.join(folder, f"{os.getpid()}.json")
        while True:
            totals = {"hits": 0, "loads": 0, "joined": 0, "entries": 0}
            for cache in list(caches):
                totals["hits"] += cache.hits
                totals["loads"] += cache.loads
                totals["joined"] += cache.joined
                totals["entries"] += len(cache)
            partial = f"{target}.tmp"
            with open(partial, "w") as out:
                json.dump(totals, out)
            os.replace(partial, target)  # a reader never sees half a file
            time.sleep(PERIOD)

    def init(self: status_cache.ReadCache[object], *args: object, **kwargs: object) -> None:
        original_init(self, *args, **kwargs)  # type: ignore[arg-type]
        caches.add(self)
        if not started.is_set():
            started.set()
            threading.Thread(target=write, name="bench-cache-probe", daemon=True).start()

    status_cache.ReadCache.__init__ = init  # type: ignore[method-assign, assignment]


if os.environ.get("C2D_BENCH_CACHE_PROBE"):
    _install(os.environ["C2D_BENCH_CACHE_PROBE"])
