"""A one-line live status on standard error for long work (elapsed audio, latency, the latest
text), redrawn in place. Only on a terminal: piped or logged stderr gets nothing, so logs stay
clean and tests see the plain output."""

from __future__ import annotations

import shutil
import sys
import time

import click

REDRAW_SECONDS = 0.1  # at most ten redraws a second


class LiveStatus:
    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._shown, self._last = "", 0.0

    def update(self, line: str, force: bool = False) -> None:
        """Shows ``line`` (cut to the terminal's width) in place of the previous status."""
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < REDRAW_SECONDS):
            return
        self._last = now
        width = shutil.get_terminal_size().columns - 1
        self._shown = line if len(line) <= width else line[:width - 1] + "…"
        sys.stderr.write("\r\033[K" + self._shown)
        sys.stderr.flush()

    def echo(self, message: str, err: bool = False) -> None:
        """Prints a line of output without tearing the status: clear, print, redraw."""
        if self.enabled and self._shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        click.echo(message, err=err)
        if self.enabled and self._shown:
            sys.stderr.write(self._shown)
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self._shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        self._shown = ""
