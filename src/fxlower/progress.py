"""Progress of a lowering: its stages (capture, normalise, rewrite with each pass and its
count, verification runs, export, check, onnxruntime), for the person waiting at a terminal
and for programs that log.

Two outlets, one source (`stage` / `step`):
- the `logging` module: logger "fxlower" at INFO, one record per finished stage with its
  elapsed time ("capture: torch.export, 2.31 s"); what library users configure as they
  configure every other library's logging;
- a status line on stderr, only when stderr is a terminal (or `verbose=True`) and never
  with `verbose=False`: a stage appears once it has run for more than a second, its line
  updated with the step and the elapsed seconds, and kept with its final time when done.
  Fast stages print nothing. In a pipe (CI logs, `2> file`) nothing is printed.

Nothing here goes into the report's data (`Report.seconds` holds the timings).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

__all__ = ["LOG", "session", "stage", "step", "SHOW_AFTER"]

LOG = logging.getLogger("fxlower")
SHOW_AFTER = 1.0  # seconds a stage runs before the terminal line shows it
_TICK = 0.25


class _Line:
    """The terminal status line: one stage at a time, redrawn by a ticker thread."""

    def __init__(self, stream: TextIO, live: bool) -> None:
        self.stream, self.live = stream, live  # live: a terminal (redraw with \r)
        self.lock = threading.Lock()
        self.name = ""
        self.detail = ""
        self.t0 = 0.0
        self.shown = False
        self.last = ""  # the text on the line now
        self.outer: list[tuple[str, str, float, bool]] = []  # stages this one runs inside
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def begin(self, name: str) -> None:
        with self.lock:
            if self.name:  # a stage inside another (lower_onnx lowers each node with lower)
                self.outer.append((self.name, self.detail, self.t0, self.shown))
            self.name, self.detail, self.t0, self.shown = name, "", time.perf_counter(), False
        if self.thread is None:
            self.thread = threading.Thread(target=self._tick, name="fxlower-progress",
                                           daemon=True)
            self.thread.start()

    def update(self, detail: str) -> None:
        with self.lock:
            self.detail = detail

    def end(self, summary: str) -> None:
        with self.lock:
            elapsed = time.perf_counter() - self.t0
            if elapsed > SHOW_AFTER:
                text = f"fxlower: {self.name}: {summary + ', ' if summary else ''}{elapsed:.1f} s"
                self._write(text, final=True)
            self.name, self.shown, self.last = "", False, ""
            if self.outer:  # back to the stage this one ran inside
                self.name, self.detail, self.t0, self.shown = self.outer.pop()

    def _tick(self) -> None:
        while not self.stop.wait(_TICK):
            with self.lock:
                if not self.name:
                    continue
                elapsed = time.perf_counter() - self.t0
                if elapsed <= SHOW_AFTER or not self.live and self.shown:
                    continue
                detail = f" {self.detail}" if self.detail else ""
                text = f"fxlower: {self.name}{detail} ... {elapsed:.0f} s"
                if text != self.last:
                    self._write(text, final=False)
                    self.last = text
                self.shown = True

    def _write(self, text: str, final: bool) -> None:
        try:
            if self.live:
                self.stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
            elif final:  # not a terminal (verbose=True): one line per stage, when it ends
                self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError, AttributeError):  # a closed stream, or none (pythonw):
            # progress is never worth a failure
            pass

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()


_CURRENT: contextvars.ContextVar[_Line | None] = contextvars.ContextVar(
    "fxlower_progress", default=None)
_ACTIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("fxlower_session", default=False)
_DEPTH: contextvars.ContextVar[int] = contextvars.ContextVar("fxlower_depth", default=0)


@contextlib.contextmanager
def session(verbose: bool | None = None, stream: TextIO | None = None) -> Iterator[None]:
    """The progress of one API call. verbose: None shows the line on a terminal, True
    always (one line per long stage when stderr is not a terminal), False never. A call
    inside another (export -> lower) joins the outer one's line."""
    if _ACTIVE.get():
        yield
        return
    out = sys.stderr if stream is None else stream
    try:
        tty = out.isatty()
    except (AttributeError, ValueError):
        tty = False
    show = verbose is not False and (tty or verbose is True)
    line = _Line(out, live=tty) if show else None
    tokens = (_ACTIVE.set(True), _CURRENT.set(line))
    try:
        yield
    finally:
        _CURRENT.reset(tokens[1])
        _ACTIVE.reset(tokens[0])
        if line is not None:
            line.close()


class _Stage:
    summary = ""  # set inside the stage: its final line's words ("torch.export", "3 runs")
    seconds = 0.0  # set when it ends: its wall time (what Report.seconds records)


@contextlib.contextmanager
def stage(name: str) -> Iterator[_Stage]:
    """A stage: logged at INFO with its time when it ends (at DEBUG inside another stage);
    on the terminal line while it runs longer than SHOW_AFTER. Set `.summary` on the
    yielded object for the final line; its `.seconds` holds the stage's time once ended."""
    line = _CURRENT.get()
    s = _Stage()
    t0 = time.perf_counter()
    depth = _DEPTH.set(_DEPTH.get() + 1)
    if line is not None:
        line.begin(name)
    failed = True
    try:
        yield s
        failed = False
    finally:
        _DEPTH.reset(depth)
        s.seconds = elapsed = time.perf_counter() - t0
        level = logging.DEBUG if _DEPTH.get() else logging.INFO
        if failed:
            LOG.log(level, "%s: failed after %.2f s", name, elapsed)
            s.summary = "failed"
        else:
            LOG.log(level, "%s: %s%.2f s", name, f"{s.summary}, " if s.summary else "", elapsed)
        if line is not None:
            line.end(s.summary)


def step(detail: str) -> None:
    """What the current stage is doing now (a pass's name and count, a run's number)."""
    line = _CURRENT.get()
    if line is not None:
        line.update(detail)
    LOG.debug("%s", detail)
