"""Benchmark harness: pytest-benchmark groups "ours vs incumbent", with a ratio table.

Run the full suite (sizes from the issues)::

    python -m pytest bench -m bench

or the smoke mode CI uses (tiny sizes, each case run once, nothing timed seriously)::

    SMENGINE_BENCH_SMOKE=1 python -m pytest bench -m bench --benchmark-disable

Each case records its median time and peak traced memory; the terminal summary prints
the medians side by side and the ratios against the incumbent of the same group.
"""

from __future__ import annotations

import os
import tracemalloc
from collections import defaultdict

import pytest

SMOKE = os.environ.get("SMENGINE_BENCH_SMOKE", "") not in ("", "0")

_RESULTS: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
_NOTES: list[str] = []


def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.bench)


def peak_memory(func, *args, **kwargs) -> float:
    """Peak traced (Python + NumPy) memory of one call, MiB."""
    tracemalloc.start()
    try:
        func(*args, **kwargs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


@pytest.fixture
def record(benchmark):
    """``record(group, name, func, *args, incumbent=False, rounds=5, items=None, unit="rows")``:
    time and store; with ``items`` (work per call) the summary also prints the throughput."""

    def _run(group, name, func, *args, incumbent=False, rounds=5, items=None, unit="rows", **kwargs):
        benchmark.group = group
        benchmark.name = name
        benchmark.extra_info["incumbent"] = incumbent
        result = benchmark.pedantic(
            func, args=args, kwargs=kwargs, rounds=1 if SMOKE else rounds, iterations=1, warmup_rounds=0 if SMOKE else 1
        )
        stats = getattr(benchmark, "stats", None)
        median = stats.stats.median if stats is not None else float("nan")
        mem = peak_memory(func, *args, **kwargs)
        benchmark.extra_info["peak_mib"] = mem
        _RESULTS[group][name] = {
            "median": median,
            "peak_mib": mem,
            "incumbent": incumbent,
            "items": items,
            "unit": unit,
        }
        return result

    return _run


@pytest.fixture
def note():
    """``note(text)``: a line for the benchmark summary (measurements that are not timings)."""
    return _NOTES.append


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _RESULTS and not _NOTES:
        return
    tr = terminalreporter
    tr.section("smengine benchmark ratios (median over rounds; peak traced memory)")
    if SMOKE:
        tr.write_line("SMOKE mode: tiny sizes, single rounds - ratios are not meaningful")
    for group, cases in _RESULTS.items():
        base = [c for c in cases.values() if c["incumbent"]]
        ref = base[0]["median"] if base else float("nan")
        tr.write_line(f"[{group}]")
        for name, c in cases.items():
            ratio = ref / c["median"] if c["median"] and c["median"] == c["median"] else float("nan")
            rate = ""
            if c.get("items") and c["median"] == c["median"] and c["median"] > 0:
                rate = f"   {c['items'] / c['median'] / 1e6:7.3f} M {c['unit']}/s"
            tr.write_line(
                f"  {name:<28s} median {c['median'] * 1e3:10.2f} ms   peak {c['peak_mib']:8.1f} MiB"
                f"   speed-up vs incumbent {ratio:7.1f}x{rate}"
            )
    for line in _NOTES:
        tr.write_line(line)
