"""Peak memory of a process tree, sampled from /proc (benchmarks whose work forks or uses pools).

``run_measured(cmd, log)`` runs ``cmd`` (its last stdout line must be JSON), polls /proc every
0.1 s and adds to that JSON the peak of the summed RSS (shared pages counted once per process: an
upper bound) and of the summed PSS (shared pages split between the processes sharing them: the
honest total) of the whole tree, and the process's wall time.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def _tree(pid: int) -> list[int]:
    kids, out, todo = _children_map(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def _rss_pss_kb(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def run_measured(cmd: list[str], log: Path, interval: float = 0.1) -> dict:
    """Run cmd; returns its last stdout line as JSON plus the peak summed RSS/PSS of its process tree."""
    peak = {"rss": 0, "pss": 0, "procs": 0}
    with open(log, "w") as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
        done = threading.Event()

        def poll() -> None:
            while not done.is_set():
                tree = _tree(proc.pid)
                mem = [_rss_pss_kb(p) for p in tree]
                peak["rss"] = max(peak["rss"], sum(m[0] for m in mem))
                peak["pss"] = max(peak["pss"], sum(m[1] for m in mem))
                peak["procs"] = max(peak["procs"], len(tree))
                done.wait(interval)

        th = threading.Thread(target=poll, daemon=True)
        th.start()
        out, _ = proc.communicate()
        done.set()
        th.join()
        wall = time.perf_counter() - t
    if proc.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-25:])
        return {"wall_process": wall, "error": f"exit {proc.returncode}; last lines of {log}:\n{tail}"}
    res = json.loads(out.strip().splitlines()[-1])
    res.update(wall_process=wall, tree_peak_rss_mb=peak["rss"] / 1024, tree_peak_pss_mb=peak["pss"] / 1024,
               tree_max_procs=peak["procs"])
    return res

