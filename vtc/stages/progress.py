"""One progress display for every long stage: a rich bar with a rate column, or nothing when quiet."""

from __future__ import annotations

import contextlib
import io
import re
import sys
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


# Lines from held-back third-party output worth a user's attention; deprecation notices are for the
# authors of the code that calls the library, not for vtc's users.
_WARNING = re.compile(r"\bwarn(ing)?\b", re.IGNORECASE)
_NOISE = re.compile(r"deprecat|FutureWarning", re.IGNORECASE)


@contextlib.contextmanager
def third_party_quiet(verbose: bool = False, console=None):
    """Hold back what libraries print on stderr inside the block (lmms-eval's and datasets' tqdm bars,
    loguru lines, transformers notices) unless ``verbose``; afterwards each warning among them is shown
    once, in one line. ``console`` (vtc's rich console) keeps writing to the real terminal."""
    if verbose:
        yield
        return
    import logging

    real, held = sys.stderr, io.StringIO()
    bound = console is not None and console.file is real  # a stderr console (--json) must stay visible
    if bound:
        unbound, console.file = console._file, real
    levels = {n: logging.getLogger(n).level for n in ("transformers", "datasets", "lmms-eval", "evaluate")}
    for name in levels:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stderr(held):
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if bound:
            console.file = unbound
        seen = set()
        for line in re.split(r"[\r\n]+", held.getvalue()):
            line = line.strip()
            if _WARNING.search(line) and not _NOISE.search(line) and line not in seen:
                seen.add(line)
                print(f"warning (third party): {line[:240]}", file=real, flush=True)
