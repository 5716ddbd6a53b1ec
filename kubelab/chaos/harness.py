"""What every chaos scenario shares: narration with timings, a fault/observation timeline, a
seeded random source (a run is replayed by giving the same seed), invariant checks, an
availability summary next to Kubernetes' SLO figures, and the verdict line + exit code."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import sys
import time
from pathlib import Path

# Kubernetes' published SLOs (sig-scalability): the reference figures runs are compared with
SLO_MUTATING_P99 = 1.0        # s, single-object mutating API calls, p99
SLO_POD_STARTUP_P99 = 5.0     # s, stateless pod start-up excluding image pull, p99


@dataclasses.dataclass
class Event:
    t: float
    kind: str  # fault | observe | check | say
    what: str
    data: dict


class Run:
    def __init__(self, name: str, seed: int | None = None, record: str | None = None,
                 out=None):
        self.name = name
        self.seed = seed if seed is not None else random.randrange(1, 1_000_000)
        self.rng = random.Random(self.seed)
        self.record = record
        self.out = out or sys.stdout
        self.t0 = time.monotonic()
        self.events: list[Event] = []
        self.failures: list[str] = []
        self.not_run: str | None = None  # the scenario cannot run on this cluster: why
        self.metrics: dict[str, object] = {}
        self.say(f"chaos {name}: seed {self.seed} (replay with --seed {self.seed})")

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _log(self, kind: str, what: str, data: dict, prefix: str = "") -> None:
        t = self.now()
        self.events.append(Event(round(t, 3), kind, what, data))
        print(f"[{t:7.2f}s] {prefix}{what}", file=self.out, flush=True)

    def say(self, what: str, **data) -> None:
        self._log("say", what, data)

    def fault(self, what: str, **data) -> None:
        self._log("fault", what, data, "FAULT  ")

    def observe(self, what: str, **data) -> None:
        self._log("observe", what, data, "SEEN   ")

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self._log("check", f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail
                                                                  else ""),
                  {"name": name, "ok": ok, "detail": detail}, "CHECK  ")
        if not ok:
            self.failures.append(f"{name}" + (f" ({detail})" if detail else ""))
        return ok

    def cannot_run(self, why: str) -> None:
        """This cluster cannot host the scenario (e.g. no network namespaces): no verdict on
        the cluster, exit code 2."""
        self.not_run = why
        self._log("say", f"cannot run here: {why}", {})

    def verdict(self) -> int:
        if self.not_run and not self.failures:
            print(f"VERDICT: NOT RUN — chaos {self.name}: {self.not_run}", file=self.out,
                  flush=True)
            return 2
        ok = not self.failures
        if self.metrics:
            print("summary:", file=self.out)
            for k, v in self.metrics.items():
                print(f"  {k}: {v}", file=self.out)
        line = (f"VERDICT: PASS — chaos {self.name} (seed {self.seed}): every invariant held"
                if ok else f"VERDICT: FAIL — chaos {self.name} (seed {self.seed}): "
                + "; ".join(self.failures))
        print(line, file=self.out, flush=True)
        if self.record:
            Path(self.record).write_text(json.dumps({
                "scenario": self.name, "seed": self.seed, "passed": ok,
                "failures": self.failures, "metrics": self.metrics,
                "timeline": [dataclasses.asdict(e) for e in self.events]}, indent=2))
        return 0 if ok else 1


class WriteProber:
    """Continuous writes (one at a time) through an async `write(i)` callable: counts failures,
    the longest gap between two acknowledged writes, latencies — the availability a user saw."""

    def __init__(self, write, interval: float = 0.05, what: str = "write"):
        self.write = write
        self.what = what  # "write" (store/API writes) or "request" (Service traffic)
        self.interval = interval
        self.acked: list[int] = []
        self.failed = 0
        self.total = 0
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self._last_ack = time.monotonic()
        self.longest_gap = 0.0
        self._task: asyncio.Task | None = None
        self._stop = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop = True
        if self._task:
            await self._task

    async def _run(self) -> None:
        i = 0
        while not self._stop:
            i += 1
            self.total += 1
            t = time.monotonic()
            try:
                await self.write(i)
            except Exception as e:  # noqa: BLE001 - every failure is data here
                self.failed += 1
                msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
                if msg not in self.errors:
                    self.errors.append(msg)
                await asyncio.sleep(self.interval)
                continue
            done = time.monotonic()
            self.latencies.append(done - t)
            self.longest_gap = max(self.longest_gap, done - self._last_ack)
            self._last_ack = done
            self.acked.append(i)
            await asyncio.sleep(self.interval)

    def summary(self) -> dict:
        lat = sorted(self.latencies)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None
        slo = (f" (Kubernetes SLO: mutating calls p99 ≤ {SLO_MUTATING_P99:.0f} s)"
               if self.what == "write" else "")
        return {"requests": self.total, "failed": self.failed,
                "availability": f"{100.0 * (self.total - self.failed) / max(1, self.total):.2f}%",
                f"longest gap between successful {self.what}s": f"{self.longest_gap:.2f}s",
                f"{self.what} p99": (f"{p99 * 1000:.0f} ms{slo}" if p99 is not None else "-")}


async def wait_until(cond, timeout: float, interval: float = 0.05):
    """Await an async condition with a deadline; returns its value or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = await cond()
        except Exception:  # noqa: BLE001 - keep polling
            v = None
        if v:
            return v
        await asyncio.sleep(interval)
    return None
