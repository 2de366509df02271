"""Progress for every job a user waits on: a rich bar when stdout is a terminal, else a plain log line at most
every ``every`` seconds and at the end ("what: k/N, 12 s elapsed, ETA 30 s"), so that ``… | cat``, files and
CI logs show it too."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("fusiondiff")


class Progress:
    """k/N with elapsed time and ETA; ``advance()`` after each unit of work, ``close()`` (or ``with``) at the end."""

    def __init__(self, total: int, what: str, every: float = 10.0, done: int = 0) -> None:
        """``done``: units finished before this progress started (a resumed job); the ETA uses only the new ones."""
        self.total, self.what, self.every, self.done, self.first = max(int(total), 1), what, every, done, done
        self.start = self.last = time.perf_counter()
        self.bar = None
        if sys.stdout.isatty():
            from rich.progress import Progress as Bar

            self.bar = Bar()
            self.bar.start()
            self.task = self.bar.add_task(what, total=self.total, completed=done)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.advance(self.task, n)
            return
        now = time.perf_counter()
        if now - self.last >= self.every or self.done == self.total:
            elapsed = now - self.start
            eta = elapsed / max(self.done - self.first, 1) * max(self.total - self.done, 0)
            log.info("%s: %d/%d, %.0f s elapsed, ETA %.0f s", self.what, self.done, self.total, elapsed, eta)
            self.last = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def eta(start: float, done: int, total: int) -> str:
    """``"ETA 12 s"`` from a ``time.perf_counter()`` start and k of N items done (folder jobs' per-item lines)."""
    left = (time.perf_counter() - start) / max(done, 1) * max(total - done, 0)
    return f"ETA {left:.0f} s"
