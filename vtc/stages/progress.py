"""One progress display for every long stage: a rich bar with a rate column, or nothing when quiet."""

from __future__ import annotations

import contextlib
import time


class _Silent:
    def advance(self, n_items: int = 1, n_units: int = 0) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def describe(self, text: str) -> None:
        pass


class _Bar:
    def __init__(self, progress, task):
        self.progress, self.task = progress, task
        self.units, self.t0 = 0, time.perf_counter()

    def advance(self, n_items: int = 1, n_units: int = 0) -> None:
        self.units += n_units
        rate = self.units / max(time.perf_counter() - self.t0, 1e-9)
        self.progress.update(self.task, advance=n_items, rate=rate)

    def note(self, text: str) -> None:
        self.progress.console.print(text, highlight=False)

    def describe(self, text: str) -> None:
        """Replace the bar's label (e.g. with the current loss)."""
        self.progress.update(self.task, description=text)


@contextlib.contextmanager
def progress_bar(description: str, total: int, unit: str, quiet: bool = False, console=None):
    """Yields an object with ``advance(n_items, n_units)`` and ``note(text)``; the rate shown is units/s."""
    if quiet or total == 0:
        yield _Silent()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:8.1f} " + unit + "/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, rate=0.0)
        yield _Bar(progress, task)
