"""Logging for every ffstream process: one format, and repeats that cannot flood the disk.

A fault that repeats quickly (a client storm, "Too many open files" on every accept) would
otherwise write the same traceback thousands of times a second. :class:`RepeatFilter` lets the
first ``burst`` records of each message template through per ``period_s`` and then one line
saying how many were dropped.
"""

from __future__ import annotations

import logging
import time

FORMAT = "%(asctime)s %(processName)s %(name)s %(levelname)s %(message)s"


class RepeatFilter(logging.Filter):
    def __init__(self, burst: int = 10, period_s: float = 10.0):
        super().__init__()
        self.burst, self.period_s = burst, period_s
        self._seen: dict[tuple[str, str], list] = {}  # (logger, template) -> [window start, count, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is None or now - seen[0] >= self.period_s:
            dropped = seen[2] if seen else 0
            self._seen[key] = [now, 1, 0]
            if len(self._seen) > 10_000:  # templates are few; never let the table grow without bound
                self._seen = {key: self._seen[key]}
            if dropped:
                record.msg = f"{record.msg} [{dropped} more like this in the last {self.period_s:g} s were not logged]"
            return True
        seen[1] += 1
        if seen[1] <= self.burst:
            return True
        seen[2] += 1
        return False


def setup(level: str) -> None:
    """Root logging at ``level`` with the repeat filter on its handler (uvicorn's and asyncio's
    records propagate to it too)."""
    logging.basicConfig(level=level, format=FORMAT)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(RepeatFilter())
