"""The fuzz loop: hypothesis feeds a target batches of cases; every case is judged and counted.

A target's `check(case)` returns how the contract answered: a label starting with "accepted", or
the rejection (e.g. "400", "dropped:malformed"); it raises `Finding` when its oracle sees a broken
promise (something partial stored, a rejection that wrote, an accepted input not stored whole).
Any other exception is one that escaped the code under test: a finding too. No exception reaches
hypothesis, so it never stops to shrink: it generates exactly the cases asked for.

Hypothesis is used with `database=None`, no deadline, the generate phase only and an explicit
seed per round (`seed` of the run and the round number), so a run is reproducible from its seed.
Cases are drawn in lists (a batch per example): hypothesis' fixed cost per example is then shared
by the whole batch. A target with `workers > 1` (one whose cases wait on other processes) gets
its cases through a bounded queue, judged by that many threads at once; `check` then learns
which worker it runs on from `worker()`, so each worker can own its own keys.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

BATCH = 20  # cases per hypothesis example
ROUND = 2000  # hypothesis examples per round (one seed each): bounds hypothesis' memory
KEPT_FINDINGS = 5  # details kept per target


class Finding(Exception):
    """An oracle saw a promise broken: `kind` (a short label) and a detail."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


_local = threading.local()


def worker() -> int:
    """The index of the worker thread judging the current case (0 without workers)."""
    return getattr(_local, "index", 0)


class Target(Protocol):
    name: str

    def strategy(self) -> st.SearchStrategy[Any]: ...

    def check(self, case: Any) -> str: ...


@dataclass
class Tally:
    name: str
    cases: int = 0
    accepted: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    findings: Counter[str] = field(default_factory=Counter)
    details: list[str] = field(default_factory=list)
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def judge(self, target: Target, case: Any) -> None:
        try:
            result = target.check(case)
        except Finding as f:
            self._finding(f.kind, f.detail, case)
        except Exception as exc:
            self._finding(f"exception {type(exc).__name__}", traceback.format_exc(limit=6), case)
        else:
            with self.lock:
                (self.accepted if result.startswith("accepted") else self.rejected)[result] += 1

    def _finding(self, kind: str, detail: str, case: Any) -> None:
        with self.lock:
            self._found(kind, detail, case)

    def _found(self, kind: str, detail: str, case: Any) -> None:
        self.findings[kind] += 1
        if self.findings[kind] == 1 and len(self.details) < KEPT_FINDINGS:
            self.details.append(f"{self.name}: {kind}\ncase: {str(case)[:600]}\n{str(detail).strip()[:3000]}")

    @property
    def finding_count(self) -> int:
        return sum(self.findings.values())


def run(target: Target, cases: int, seed: int, batch: int = BATCH, progress: int = 0) -> Tally:
    """Feed `target` exactly `cases` hypothesis-generated cases; count what became of each.
    `progress`: print a line every that many cases (0: never)."""
    tally = Tally(target.name)
    started = time.monotonic()
    workers = int(getattr(target, "workers", 1))
    inbox: queue.Queue[Any] = queue.Queue(maxsize=4 * workers)
    threads = [
        threading.Thread(target=_work, args=(i, target, tally, inbox), daemon=True)
        for i in range(workers if workers > 1 else 0)
    ]
    for t in threads:
        t.start()
    strategy = st.lists(target.strategy(), min_size=max(1, batch // 2), max_size=batch)
    round_ = 0
    drawn = 0
    try:
        while drawn < cases:
            before = drawn
            examples = min(ROUND, -(-(cases - drawn) // max(1, batch * 3 // 4)))

            @hypothesis_seed(seed * 1_000_003 + round_)
            @settings(
                max_examples=examples,
                database=None,
                deadline=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
                derandomize=False,
            )
            @given(strategy)
            def feed(items: list[Any]) -> None:
                nonlocal drawn
                for case in items:
                    if drawn >= cases:
                        return
                    drawn += 1
                    if progress and drawn % progress == 0:
                        print(f"   {drawn:,} cases, {time.monotonic() - started:.0f} s", flush=True)
                    if threads:
                        inbox.put(case)
                    else:
                        tally.judge(target, case)

            feed()
            round_ += 1
            if drawn == before:  # the strategy is exhausted: nothing new to try
                break
    finally:
        for _ in threads:
            inbox.put(_DONE)
        for t in threads:
            t.join()
    tally.cases = drawn
    tally.seconds = time.monotonic() - started
    return tally


_DONE = object()


def _work(index: int, target: Target, tally: Tally, inbox: queue.Queue[Any]) -> None:
    _local.index = index
    while (case := inbox.get()) is not _DONE:
        tally.judge(target, case)
