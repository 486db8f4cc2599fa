"""Per-program cost of the code sandbox: each kernel boundary against the audit-hook-only sandbox it replaced.

Runs the test suite's ordinary programs (sum of stdin, standard-library imports, writing in the work folder)
through ``engine.rewards.sandbox.run_program`` with every mechanism, interleaved so that machine load hits all alike,
and
— with ``--before FILE`` (e.g. ``git show 0228a7c:engine/rewards/sandbox.py > /tmp/sandbox_before.py``) — through the
previous sandbox module. Prints the median wall milliseconds per program run and, in brackets, the median CPU
milliseconds of the child processes (steadier on a loaded machine). Run by hand:

    PYTHONPATH=. python bench/sandbox_overhead.py --repeats 30 --before /tmp/sandbox_before.py
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import resource
import statistics
import sys
import time
from collections.abc import Callable

from engine.rewards import sandbox

log = logging.getLogger("bench.sandbox_overhead")

PROGRAMS = {
    "sum of stdin": ("import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))\n", "1 2 3\n"),
    "stdlib imports": ("import math, collections, itertools, heapq, bisect, functools, re, json, fractions\n"
                       "print(math.gcd(12, 18), collections.Counter('aab')['a'])\n", ""),
    "file in work folder": ("open('notes.txt', 'w').write('hello')\nprint(open('notes.txt').read())\n", ""),
}


def _runners(before: str | None) -> dict[str, Callable[[str, str], object]]:
    runners: dict[str, Callable[[str, str], object]] = {}
    if before:
        spec = importlib.util.spec_from_file_location("sandbox_before", before)
        old = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = old  # dataclasses look their module up there
        spec.loader.exec_module(old)
        runners["before (--before)"] = lambda code, stdin: old.run_program(code, stdin)
    for mode in sandbox.MECHANISMS:
        if mode == "landlock" and sandbox.landlock_abi() < 1 or mode == "bwrap" and not sandbox._bwrap_works():
            continue
        runners[mode] = lambda code, stdin, mode=mode: sandbox.run_program(code, stdin, _mechanism=mode)
    return runners


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the programs (and bwrap) are waited-for children
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--before", help="path of the previous engine/rewards/sandbox.py, to compare against")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    runners = _runners(args.before)
    times: dict[tuple[str, str], list[float]] = {}
    cpu_times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeats):
        for program, (code, stdin) in PROGRAMS.items():
            for name, run in runners.items():  # interleaved: load spikes hit every runner alike
                start, cpu = time.perf_counter(), _children_cpu()
                result = run(code, stdin)
                times.setdefault((program, name), []).append((time.perf_counter() - start) * 1000)
                cpu_times.setdefault((program, name), []).append((_children_cpu() - cpu) * 1000)
                if result.returncode != 0:
                    raise SystemExit(f"{name} failed on {program!r}: {result.stderr}")
    log.info("| program | %s |", " | ".join(runners))
    log.info("|---|%s", "---|" * len(runners))
    for program in PROGRAMS:
        cells = [f"{statistics.median(times[program, name]):.0f} ({statistics.median(cpu_times[program, name]):.0f})"
                 for name in runners]
        log.info("| %s | %s |", program, " | ".join(cells))


if __name__ == "__main__":
    main()
