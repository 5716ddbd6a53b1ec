"""What every long-running kubelab process does before it enters its event loop.

Garbage collection: the components keep caches of API objects — tens of thousands of small dicts
and lists that live for the whole run and hold no reference cycles. CPython's cyclic collector
still walks all of them on every full (generation 2) collection, and with its default thresholds
(700, 10, 10) a 3,000-pod burst cost the API server 7.3 of its 31.7 CPU-seconds (23 full
collections took 5.3 s), the hollow nodes 2.7 of 6.2 (bench/scheduler_bench.py, measured with
gc.callbacks). Start-up objects are frozen out of the collector's view and collections are made
rarer; cycles (asyncio exceptions with tracebacks, mostly) are still collected.
"""

from __future__ import annotations

import gc

# generation 0 every 50,000 net allocations instead of 700; a full collection at most every
# 50,000 * 20 * 20 allocations, and then only when the long-lived heap grew by a quarter
GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    gc.freeze()  # modules, protobuf descriptors, kind tables: never garbage
    gc.set_threshold(*GC_THRESHOLDS)


def prepare() -> None:
    """uvloop as the event loop (when installed) and the collector tuned, before asyncio.run."""
    try:
        import uvloop
        uvloop.install()
    except ImportError:  # pragma: no cover - the standard loop works, slower
        pass
    tune_gc()
