"""Processes seen through /proc and pgrep: children, memory, CPU seconds, and whether the machine is quiet."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from types import TracebackType
from typing import Self


def status_kb(pid: int, field: str) -> int:
    """One kB field of /proc/PID/status (VmRSS, VmHWM, ...); KeyError when the process has none."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def rss_mib(pid: int) -> float:
    """Resident memory in MiB; 0 for a process that is gone."""
    try:
        return status_kb(pid, "VmRSS") / 1024
    except (OSError, KeyError):
        return 0.0


def children(pid: int) -> list[int]:
    """The direct children of a process, by parent pid: pgrep -P also finds those that a thread other than
    the main one forked (a Celery pool's replacements), which /proc/PID/task/PID/children does not list."""
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
    except OSError:
        return []
    return [int(x) for x in out.split()]


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        found += kids
        todo += kids
    return found


def pids_named(name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True, check=False).stdout
    return [int(x) for x in out.split()]


def process_cpu(pid: int, *, reaped: bool = False) -> float:
    """CPU seconds (user + system) of one process, plus its waited-for children when `reaped`."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if reaped else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(web_pid: int, worker_pid: int) -> dict[str, float]:
    """CPU seconds so far of each part of the stack. A process tree counts its exited children
    (PostgreSQL backends that closed, gunicorn workers that were replaced) through its root."""
    postgres = pids_named("postgres")
    postmaster = min(postgres, default=0)
    times = os.times()
    return {
        "gunicorn (web)": sum(process_cpu(p, reaped=p == web_pid) for p in [web_pid, *descendants(web_pid)]),
        "celery worker": sum(process_cpu(p, reaped=p == worker_pid) for p in [worker_pid, *descendants(worker_pid)]),
        "PostgreSQL": sum(process_cpu(p, reaped=p == postmaster) for p in postgres),
        "Redis": sum(process_cpu(p) for p in pids_named("redis-server")),
        "this client": times.user + times.system,
    }


def machine_quiet() -> tuple[bool, str]:
    """(whether the figures can be trusted, a line saying why): low load and no `ml train` running."""
    load1 = os.getloadavg()[0]
    training = subprocess.run(["pgrep", "-f", "ml train"], capture_output=True, text=True, check=False).stdout.split()
    training = [pid for pid in training if int(pid) != os.getpid()]
    quiet = load1 < 0.7 and not training
    return quiet, f"1-minute load {load1:.2f}" + (
        f", `ml train` running (pid {', '.join(training)})" if training else ""
    )


class PeakRss:
    """The peak RSS increase of one process while the `with` block runs, in MiB (`.mib` afterwards).

    Its VmHWM is reset to the current RSS first (/proc/PID/clear_refs), then sampled every `interval`
    seconds as well as at the end: VmHWM is gone with the process if it is killed (a gunicorn worker
    past its timeout), so the last value seen is kept.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval = pid, interval
        self.before = self.peak = 0
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Self:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        self.before = self.peak = status_kb(self.pid, "VmRSS")
        self._sampler.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()
        self._sampler.join()
        self._read()

    @property
    def mib(self) -> float:
        return (self.peak - self.before) / 1024

    def _read(self) -> bool:
        try:
            self.peak = max(self.peak, status_kb(self.pid, "VmHWM"))
        except (OSError, KeyError):
            return False
        return True

    def _sample(self) -> None:
        while not self._done.wait(self.interval):
            if not self._read():
                return
