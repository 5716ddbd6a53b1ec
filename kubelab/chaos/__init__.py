"""Chaos scenarios: each narrates what it does and sees, checks invariants while it runs, ends
with a verdict line and exits non-zero when an invariant broke (so each is also a test).
`kubelab chaos <name> --state-dir DIR [--seed N] [--record FILE]`; scripts/chaos/<name> runs
the same."""

from __future__ import annotations

import asyncio

from kubelab.cluster import Cluster

from .harness import Run


def _scenarios():
    from . import controlplane, store
    table = {
        "quorum": (store.quorum,
                   "kill the store leader, then a second member, then restart both"),
        "store-linearizability": (store.store_linearizability,
                                  ("a recorded put/get/CAS history under kills and partitions, "
                                   "checked for linearizability")),
        "control-plane": (controlplane.control_plane,
                          "kill the active controller manager and scheduler with standbys"),
    }
    try:
        from . import workers
        table.update(workers.SCENARIOS)
    except ImportError:
        pass
    return table


def names() -> list[str]:
    return list(_scenarios())


def run(name: str, cluster: Cluster, seed: int | None = None, record: str | None = None,
        **kw) -> int:
    fn, _ = _scenarios()[name]
    r = Run(name, seed, record)
    try:
        asyncio.run(fn(cluster, r, **kw))
    except KeyboardInterrupt:
        r.check("the run completed", False, "interrupted")
    return r.verdict()
