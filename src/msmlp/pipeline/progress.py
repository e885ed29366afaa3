"""Step lines on the log: ``[2/6] export ONNX (opset 17) ...`` then the outcome and the time taken.

The total comes from the plan of steps, so it cannot drift from what runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from msmlp.log import logger


class Progress:
    def __init__(self, plan: Sequence[str]) -> None:
        self.plan = list(plan)
        self.index = 0
        self.timings: dict[str, float] = {}

    @contextmanager
    def step(self, key: str, title: str) -> Iterator[dict[str, str]]:
        if key not in self.plan:
            raise KeyError(f"step {key!r} is not in the plan {self.plan}")
        self.index = self.plan.index(key) + 1
        prefix = f"[{self.index}/{len(self.plan)}]"
        logger.info("%s %s ...", prefix, title)
        outcome: dict[str, str] = {}
        start = time.perf_counter()
        yield outcome
        self.timings[key] = round(time.perf_counter() - start, 2)
        detail = f"{outcome['detail']} " if outcome.get("detail") else ""
        logger.info("%s %s(%.1f s)", " " * len(prefix), detail, self.timings[key])
