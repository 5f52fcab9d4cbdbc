"""Progress of long work: one policy for evaluation, neural training epochs, EASE and the CLI.

``progress(total, desc, unit, enabled)`` returns a reporter with ``update(n, **postfix)`` and
``close()`` (also a context manager):

- ``enabled=False`` (``verbose=False``, ``--quiet``): nothing;
- ``enabled=None`` (the default everywhere) or ``True``: on a terminal (stderr is a TTY) a tqdm
  bar that appears only once the work has run for ``DELAY`` seconds, so quick calls stay
  silent; otherwise plain lines through ``logging`` (logger ``recsys_fast.progress``, INFO): no
  carriage returns in log files, at most one line per ``LINE_EVERY`` seconds, and none for work
  shorter than ``DELAY``.

Diagnostics go through ``logging`` (logger ``recsys_fast``), never ``print``.
"""

from __future__ import annotations

import logging
import sys
import time

DELAY = 2.0        # seconds of work before any progress is shown
LINE_EVERY = 10.0  # seconds between two plain progress lines

_log = logging.getLogger("recsys_fast.progress")


def progress(total: int | None, desc: str, unit: str = "it", enabled: bool | None = None):
    """A progress reporter for ``total`` units of work (see the module docstring)."""
    if enabled is False:
        return _Silent()
    if _is_tty(sys.stderr):
        from tqdm.auto import tqdm

        return _Bar(tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, delay=DELAY,
                         dynamic_ncols=True))
    return _Lines(total, desc, unit)


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _Silent:
    def update(self, n: int = 1, **postfix) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Bar(_Silent):
    def __init__(self, bar):
        self.bar = bar

    def update(self, n: int = 1, **postfix) -> None:
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


class _Lines(_Silent):
    """Line-based progress for logs: ``evaluating ItemKNN: 4096/10000 users (41%), 12.3 s``."""

    def __init__(self, total, desc: str, unit: str):
        self.total, self.desc, self.unit = total, desc, unit
        self.done = 0
        self.started = time.monotonic()
        self.last = None
        self.postfix: dict = {}

    def update(self, n: int = 1, **postfix) -> None:
        self.done += n
        self.postfix.update(postfix)
        now = time.monotonic()
        if now - self.started >= DELAY and (self.last is None or now - self.last >= LINE_EVERY):
            self.last = now
            _log.info(self._line(now))

    def close(self) -> None:
        now = time.monotonic()
        if self.last is not None:  # it was long enough to report: say that it finished
            _log.info(self._line(now) + " done")

    def _line(self, now: float) -> str:
        of = f"/{self.total}" if self.total else ""
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        extra = "".join(f", {k} {v:.4g}" if isinstance(v, float) else f", {k} {v}" for k, v in self.postfix.items())
        return f"{self.desc}: {self.done}{of} {self.unit}{pct}, {now - self.started:.1f} s{extra}"
