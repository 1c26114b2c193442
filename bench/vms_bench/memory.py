"""Peak resident memory of a process and all its children (vLLM runs its engine core in a child process)."""

import contextlib
import threading

import psutil


def tree_rss(root: psutil.Process) -> int:
    """Resident bytes of `root` and all its descendants now; processes that end meanwhile count 0."""
    processes = [root, *root.children(recursive=True)]  # NoSuchProcess when root itself is gone
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


class PeakRss:
    """Samples the summed RSS of a process tree every `interval` seconds until stopped."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                total = tree_rss(self.root)
            except psutil.NoSuchProcess:
                return
            self.peak_bytes = max(self.peak_bytes, total)
            self._stop.wait(self.interval)
