"""The one exception tree of the harness.

    DrillError                      base of everything the harness raises on purpose
    ├── InputError                  bad input found before anything was created (CLI exit 2)
    │   ├── TopologyError           a topology file is malformed or inconsistent
    │   ├── UsageError              a command or API call names something that does not exist,
    │   │                           or asks for something in the wrong state
    │   └── FaultError              a fault request is invalid (unknown name, absurd values)
    └── HarnessError                a runtime failure of the harness or its components (exit 2
        │                           too, but never confused with an objective missed, which is 1)
        ├── EngineError             the Docker engine is missing, unreachable or failed an operation
        ├── ImageBuildError         building an image or preparing its build context failed
        ├── ReadinessError          a component did not become ready in time (names what, where,
        │                           how long, a hint and the last log lines)
        └── TeardownError           something could not be removed within the time limit

Back-end errors (docker SDK, subprocess) are translated into these in one place per back end and
chained with ``raise ... from``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class DrillError(Exception):
    """Base class of every error the harness raises on purpose."""

    exit_code = 2


class InputError(DrillError):
    """Bad input: nothing was created or changed."""


@dataclass(frozen=True)
class Problem:
    """One problem in an input file: where (a dotted path inside the file) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.message}"


class TopologyError(InputError):
    """A topology (or drill) file is malformed or inconsistent; lists every problem found."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = [f"{source}: {len(self.problems)} problem(s)"]
        lines += [f"  {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class UsageError(InputError):
    """A request names something unknown or comes in the wrong state."""


class FaultError(InputError):
    """A fault request is invalid."""


class HarnessError(DrillError):
    """A runtime failure of the harness or of one of its components."""


class EngineError(HarnessError):
    """The container engine is missing, unreachable, or an engine operation failed."""


class ImageBuildError(HarnessError):
    """Preparing a build context or building an image failed."""


class ReadinessError(HarnessError):
    """A component did not become ready in time."""

    def __init__(
        self,
        what: str,
        where: str,
        waited_s: float,
        hint: str = "",
        last_logs: str = "",
    ) -> None:
        self.what = what
        self.where = where
        self.waited_s = waited_s
        self.hint = hint
        self.last_logs = last_logs
        msg = f"{what} at {where} was not ready after {waited_s:.1f}s"
        if hint:
            msg += f"\n  hint: {hint}"
        if last_logs:
            tail = "\n".join("    " + line for line in last_logs.rstrip().splitlines())
            msg += f"\n  last log lines:\n{tail}"
        super().__init__(msg)


class TeardownError(HarnessError):
    """Objects could not be removed within the time limit."""
