"""Process-tree accounting from /proc: CPU (utime+stime) and memory (RSS, PSS).

A server's tree is its pid plus every pid whose ppid chain leads to it (found by
reading /proc/*/stat), so forked workers (gunicorn, uWSGI, nginx) are counted.
"""
from __future__ import annotations

import os
import resource

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _read_stat(pid: int):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    # comm may contain spaces and parens: split after the last ')'.
    rest = data[data.rindex(b")") + 2:].split()
    # rest[0] is field 3 (state); ppid is field 4; utime 14, stime 15.
    return {"ppid": int(rest[1]), "utime": int(rest[11]), "stime": int(rest[12])}


def tree_pids(root: int) -> list[int]:
    """root and all its descendants (by the /proc ppid chain)."""
    parents = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _read_stat(int(name))
        if st is not None:
            parents[int(name)] = st["ppid"]
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in parents or pid == root:
            out.append(pid)
        todo.extend(children.get(pid, ()))
    return [p for p in out if p in parents]


def tree_cpu_seconds(root: int) -> float:
    """utime+stime (seconds) of root's whole live tree, threads included."""
    total = 0
    for pid in tree_pids(root):
        st = _read_stat(pid)
        if st is not None:
            total += st["utime"] + st["stime"]
    return total / CLK_TCK


def per_pid_cpu_seconds(root: int) -> dict[int, float]:
    """{pid: utime+stime seconds} for each live process of root's tree (threads folded
    into their process), e.g. to see how work spread over a server's workers."""
    out = {}
    for pid in tree_pids(root):
        st = _read_stat(pid)
        if st is not None:
            out[pid] = (st["utime"] + st["stime"]) / CLK_TCK
    return out


def tree_ctx_switches(root: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of root's live tree, every thread
    of every process (summed over /proc/PID/task/*/status)."""
    vol = invol = 0
    for pid in tree_pids(root):
        try:
            tasks = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue
        for tid in tasks:
            try:
                with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            vol += int(line.split()[1])
                        elif line.startswith("nonvoluntary_ctxt_switches:"):
                            invol += int(line.split()[1])
            except OSError:
                continue
    return vol, invol


def _status_kib(pid: int, key: str) -> int:
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kib(pid: int) -> int:
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory_kib(root: int) -> dict:
    """{'rss_kib': sum of VmRSS, 'pss_kib': sum of Pss, 'pids': n} over root's tree.

    RSS counts pages shared between forked processes once per process; PSS splits
    them, so it is the fairer total for pre-fork servers.
    """
    pids = tree_pids(root)
    return {"rss_kib": sum(_status_kib(p, "VmRSS") for p in pids),
            "pss_kib": sum(_pss_kib(p) for p in pids),
            "pids": len(pids)}


def children_cpu_seconds() -> float:
    """utime+stime of this process's reaped children (for the load client)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def raise_nofile(n: int = 65536) -> int:
    """Raise RLIMIT_NOFILE (soft and hard, as root may) to n; -> the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (n, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def system_busy_seconds() -> float:
    """CPU seconds spent busy (not idle/iowait) by all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    vals = [int(x) for x in fields[:8]]   # user nice system idle iowait irq softirq steal
    return (sum(vals) - vals[3] - vals[4]) / CLK_TCK


def wait_quiet(max_wait: float, threshold: float = 0.2, sample: float = 0.5) -> dict:
    """Wait (up to max_wait s) until the machine is quiet: fewer than `threshold` cores
    busy over a `sample`-second window. Other work on a 2-core host (tests, a VM)
    would otherwise land in the numbers. -> {'waited_s', 'busy_cores'} of the last sample."""
    import time
    t0 = time.monotonic()
    while True:
        b0 = system_busy_seconds()
        time.sleep(sample)
        busy = (system_busy_seconds() - b0) / sample
        waited = time.monotonic() - t0
        if busy < threshold or waited >= max_wait:
            return {"waited_s": round(waited, 1), "busy_cores": round(busy, 2)}
