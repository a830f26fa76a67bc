"""Helpers shared by the benchmarks in ``bench/``: progress, medians, names, output.

Benchmarks print progress on stderr and only their JSON result on stdout, so that
``make bench > results.jsonl`` keeps the figures alone.
"""

from __future__ import annotations

import json
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from harness.runtime import DockerRuntime
from harness.signals import interruptible

__all__ = ["interruptible"]


def log(msg: str) -> None:
    """A progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def emit(result: dict[str, Any]) -> None:
    """One JSON result line on stdout."""
    print(json.dumps(result), flush=True)


def median(values: Sequence[float], ndigits: int = 3) -> float:
    """The median, rounded (NaN for no values)."""
    return round(statistics.median(values), ndigits) if values else float("nan")


def ratio(num: float, den: float, ndigits: int = 3) -> float:
    """num/den rounded, NaN when den is not positive."""
    return round(num / den, ndigits) if den > 0 else float("nan")


def unique_lab_name(prefix: str = "bench") -> str:
    """A lab name no one else uses (``bench-<6 hex>``), valid for ``harness.lab``."""
    return f"{prefix}-{secrets.token_hex(3)}"


class Timer:
    """Wall-clock duration of a ``with`` block, in seconds (monotonic clock)."""

    def __init__(self) -> None:
        self.s = 0.0
        self._t0 = 0.0

    def __enter__(self) -> Timer:
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.s = time.monotonic() - self._t0


def run_in_lab(
    topology: Any,
    measure: Callable[[DockerRuntime, str], dict[str, Any]],
    prefix: str = "bench",
) -> int:
    """Bring a lab up, measure in it, always take it down; emit the result. An exit code.

    0 measured, 2 the harness failed (said on stderr), 130 interrupted; the lab is removed in
    every case.
    """
    from harness import engine, lab
    from harness.errors import DrillError

    client = engine.connect()
    rt = DockerRuntime(client)
    name = unique_lab_name(prefix)
    try:
        with interruptible():
            try:
                t0 = time.monotonic()
                lab.up(topology, name, runtime=rt, progress=log)
                log(f"lab {name} up in {time.monotonic() - t0:.1f}s")
                result = measure(rt, name)
            finally:
                log(f"taking lab {name} down")
                lab.down(name, runtime=rt)
    except KeyboardInterrupt:
        log("interrupted; the lab has been taken down")
        return 130
    except DrillError as exc:
        log(f"error: {exc}")
        return 2
    finally:
        client.close()
    emit(result)
    return 0
