"""Profile the gateway under the P1 load with py-spy and print where its samples go.

Starts ``sluice serve`` on ``logreg``, drives it with wrk (c = 64, single-row v2 JSON), records the
server with ``py-spy record --format raw`` (collapsed stacks) for ``--seconds``, and prints the functions
with the most samples: *self* (the sample's innermost frame) and *total* (anywhere on the stack).
Needs ``pip install py-spy`` (a tool, not a dependency of the gateway) and ptrace rights (root here).

    python -m loadtests.profile --seconds 10
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from loadtests import WORK_DIR, bench, models


def _function(frame: str) -> str:
    """``name (file:line)`` -> ``name (file)``: samples of one function, whatever its line."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def summarise(collapsed: Path, top: int) -> str:
    """Sample shares from py-spy's collapsed stacks (recorded with ``--threads``), per thread and function.

    *self*: the innermost Python frame of a sample (time in C code called from it counts there, e.g. the
    event loop's own I/O shows as ``Runner.run``); *total*: the function anywhere on the stack.
    """
    threads: Counter[str] = Counter()
    self_lines: Counter[str] = Counter()
    self_funcs: Counter[str] = Counter()
    total_funcs: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        thread = "?"
        while frames and frames[0].startswith(("process ", "thread ")):
            thread = frames.pop(0)
        if not frames:
            continue
        samples += count
        threads[thread] += count
        self_lines[frames[-1]] += count
        self_funcs[_function(frames[-1])] += count
        for name in {_function(f) for f in frames}:
            total_funcs[name] += count

    def pct(n: int) -> str:
        return f"{100 * n / samples:6.1f}"

    lines = [f"{samples} samples (idle threads excluded)", "", "share  thread"]
    lines += [f"{pct(n)}  {name}" for name, n in threads.most_common()]
    lines += ["", "self %  function (innermost Python frame, all its lines)"]
    lines += [f"{pct(n)}  {name}" for name, n in self_funcs.most_common(top)]
    lines += ["", "self %  line"]
    lines += [f"{pct(n)}  {name}" for name, n in self_lines.most_common(top)]
    lines += ["", "total %  function (anywhere on the stack)"]
    lines += [f"{pct(n)}  {name}" for name, n in total_funcs.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--output", type=Path, default=WORK_DIR / "p1-profile.txt")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    repository = models.repository_with(("logreg",))
    body = bench._write("logreg-1x32.json", bench._json_body(bench._rows(1)))
    server = bench.gateway("sluice logreg", repository).start()
    try:
        target = bench.Target(server, "/v2/models/logreg/infer", body)
        target.check()
        target.load(args.connections, 2)
        load = threading.Thread(
            target=target.load, args=(args.connections, args.seconds + 3), name="wrk", daemon=True
        )
        load.start()
        args.output.parent.mkdir(parents=True, exist_ok=True)
        raw = args.output.with_suffix(".collapsed")
        record = [
            py_spy,
            "record",
            "--pid",
            str(server.pid),
            "--duration",
            str(args.seconds),
            "--rate",
            "200",
        ]
        record.append("--threads")
        subprocess.run([*record, "--format", "raw", "--output", str(raw)], check=True, capture_output=True)
        load.join(args.seconds + 30)
    finally:
        server.stop()
    text = summarise(raw, args.top)
    args.output.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
