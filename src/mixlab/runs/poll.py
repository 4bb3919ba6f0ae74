"""Progress from where the work reports: call a function periodically while a long call runs.

Sweeps and swarms run their work in other processes (local pools, Ray, Slurm) that report to the
results store and run directories, never to this process; the progress display polls those instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def polling(poll: Callable[[], None], every_s: float = 0.5) -> Iterator[None]:
    """Call ``poll`` every ``every_s`` seconds in a daemon thread while the body runs, and once more
    after it ends (so the display shows the final state even when the body was quick)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            poll()

    thread = threading.Thread(target=loop, name="progress-poll", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        poll()
