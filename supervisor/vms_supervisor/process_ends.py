"""When each of the engine's processes ended, to the moment: a rank that dies takes the engine's main process with
it within a fraction of a second, sooner than the operator's next check, and only the order of their ends tells
which fell first. A thread waits on a pidfd per process (Linux >= 5.3) and notes the monotonic time it ended."""

import contextlib
import os
import select
import threading
import time


class ProcessEnds:
    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._fds: dict[int, int] = {}  # pid -> its pidfd, while it runs
        self._ended: dict[int, float] = {}  # pid -> when it ended
        self._poll = select.poll()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        self._poll.register(self._wake_read, select.POLLIN)
        threading.Thread(target=self._wait, name="process-ends", daemon=True).start()

    def watch(self, pids: list[int]) -> None:
        """Start watching these processes (those watched already are left as they are). One that has already
        ended is noted as ending now: it ended no later than that."""
        with self._lock:
            for pid in pids:
                if pid in self._fds or pid in self._ended:
                    continue
                try:
                    fd = os.pidfd_open(pid)
                except ProcessLookupError:
                    self._ended[pid] = self._clock()
                    continue
                except OSError:  # a kernel without pidfds: when it ends stays unknown
                    continue
                self._fds[pid] = fd
                self._poll.register(fd, select.POLLIN)
        os.write(self._wake_write, b"w")  # the poll picks up the new descriptors

    def ended_at(self, pid: int) -> float | None:
        with self._lock:
            return self._ended.get(pid)

    def forget(self) -> None:
        """Drop every process: the next engine's are watched afresh."""
        with self._lock:
            for fd in self._fds.values():
                self._poll.unregister(fd)
                os.close(fd)
            self._fds.clear()
            self._ended.clear()

    def _wait(self) -> None:
        while True:
            events = self._poll.poll()
            now = self._clock()
            with self._lock:
                by_fd = {fd: pid for pid, fd in self._fds.items()}
                for fd, _ in events:
                    if fd == self._wake_read:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_read, 4096)
                        continue
                    pid = by_fd.get(fd)
                    if pid is None:  # forgotten between the poll and the lock
                        continue
                    self._poll.unregister(fd)
                    os.close(fd)
                    del self._fds[pid]
                    self._ended[pid] = now
