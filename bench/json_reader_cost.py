"""What reading untrusted JSON through the contract costs (issue #19, item 4): ``safe_json_loads`` (finite floats,
no NaN, a depth walk) against plain ``json.loads`` on the lines the engine and the studio read most — an event, a
data row, a stdin command — and ``read_events`` (which also checks each event's fields) over a 20,000-line
events file. Run: ``python bench/json_reader_cost.py``; prints microseconds per line."""
from __future__ import annotations

import io
import json
import tempfile
import time
import timeit
from pathlib import Path

from engine.contract.protocol import EventWriter, read_events
from engine.contract.safe_json import safe_json_loads

LINES = {
    "metric event": json.dumps({"v": 1, "type": "metric", "run_id": "20261207-120000-demo-1a2b", "seq": 812,
                                "time": 1765100000.123, "data": {"stage": "kd", "step": 40,
                                                                 "values": {"train/loss": 1.234, "train/lr": 3e-3,
                                                                            "kd/ce": 0.9, "kd/divergence": 0.3}}}),
    "data row (1 KB)": json.dumps({"instruction": "Explain " * 40, "context": "", "response": "Because " * 80,
                                   "category": "open_qa", "tests": [{"input": "1 2", "output": "3"}] * 3}),
    "cancel command": json.dumps({"type": "cancel"}),
}


def per_line_us(fn, line: str, number: int = 20_000) -> float:
    return min(timeit.repeat(lambda: fn(line), number=number, repeat=5)) / number * 1e6


def main() -> None:
    for name, line in LINES.items():
        plain, safe = per_line_us(json.loads, line), per_line_us(safe_json_loads, line)
        print(f"{name:<16} json.loads {plain:6.2f} us   safe_json_loads {safe:6.2f} us   (x{safe / plain:.2f})")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.jsonl"
        writer = EventWriter("r", io.StringIO(), mirror=path)
        for step in range(20_000):
            writer.metric("kd", step, {"train/loss": 1.0 / (step + 1), "train/lr": 3e-3})
        writer.close()
        start = time.perf_counter()
        count = sum(1 for _ in read_events(path))
        took = time.perf_counter() - start
        print(f"read_events: {count} events in {took * 1e3:.0f} ms ({took / count * 1e6:.1f} us per event)")


if __name__ == "__main__":
    main()
