"""The engine's log file: its last lines for /admin/logs, and a follower that echoes it to the operator's stdout
(so `docker logs` shows the engine too, while supervisord keeps the rotated files: engine.log, engine.log.1, ...)."""

import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

TAIL_CHUNK = 64 * 1024
MAX_TAIL_BYTES = 1 << 20  # a tail is at most this long, however long the lines (a logged 1 MB prompt, say)


def tail(path: Path, lines: int, max_bytes: int = MAX_TAIL_BYTES) -> str:
    """The last `lines` lines of the log at `path`, continued into its rotated predecessors (path.1, path.2, ...)
    when the current file holds fewer: a rotation a moment ago must not make the recent history vanish. At most
    the last `max_bytes` of them."""
    collected: list[str] = []
    size, generation = 0, 0
    while len(collected) < lines and size < max_bytes:
        current = path if generation == 0 else path.with_name(f"{path.name}.{generation}")
        if not current.exists():
            break
        part = _tail_of_file(current, lines - len(collected), max_bytes - size)
        collected = part + collected
        size += sum(len(line) + 1 for line in part)
        generation += 1
    return "\n".join(collected)[-max_bytes:]


def _tail_of_file(path: Path, lines: int, max_bytes: int) -> list[str]:
    """The last `lines` lines of one file, reading backwards in chunks, never more than about `max_bytes`."""
    try:
        with path.open("rb") as file:
            file.seek(0, 2)
            position, data = file.tell(), b""
            while position > 0 and data.count(b"\n") <= lines and len(data) < max_bytes:
                step = min(TAIL_CHUNK, position)
                position -= step
                file.seek(position)
                data = file.read(step) + data
    except FileNotFoundError:  # rotated away between the check and the open
        return []
    return data.decode(errors="replace").splitlines()[-lines:]


class LogFollower(threading.Thread):
    """Copies lines appended to `path` to `out`, each as `render` makes it (with a prefix, or as JSON); starts again
    at the top when the file is rotated."""

    def __init__(
        self, path: Path, render: Callable[[str], str], stop: threading.Event, out: TextIO = sys.stdout
    ) -> None:
        super().__init__(name="engine-log", daemon=True)
        self.path, self.render, self.stop, self.out = path, render, stop, out

    def run(self) -> None:
        file, inode = None, None
        while not self.stop.is_set():
            try:
                current = self.path.stat().st_ino
            except FileNotFoundError:
                current = None
            if current is not None and current != inode:  # created or rotated
                if file:
                    self._copy(file)  # the lines written just before the rotation
                    file.close()
                file, inode = self.path.open("r", errors="replace"), current
            if file is None or not self._copy(file):
                self.stop.wait(0.5)

    def _copy(self, file) -> bool:
        lines = file.readlines()
        for line in lines:
            self.out.write(self.render(line.removesuffix("\n")) + "\n")
        if lines:
            self.out.flush()
        return bool(lines)
