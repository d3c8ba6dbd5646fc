"""The bench scripts that time mlrun itself (bench.engine_overhead, bench.sweep_overhead), as a person runs them
at small sizes: a line for each figure, its unit, and its ratio computed from the figures printed beside it."""
import re
import subprocess
import sys

import pytest

from conftest import ROOT

SECONDS = r"median (\d+\.\d{3}) s  min (\d+\.\d{3}) s"


def _ratio_of(ratio, top, bottom, half):
    """Whether a printed ratio (to 0.1 at worst) is top / bottom, each of those printed rounded to +- half."""
    return (top - half) / (bottom + half) - 0.05 <= ratio <= (top + half) / (bottom - half) + 0.05


def _bench(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.mark.slow  # about 4 s on a 2-core machine
def test_engine_overhead_prints_each_start_beside_a_bare_python_one():
    result = _bench("bench.engine_overhead", "--repeat", "1", "--entries", "20")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 8, lines
    bare = float(re.match(r"python -c pass \(bare start\): +" + SECONDS + "$", lines[0]).group(1))
    expected = [r"warm run, 14-node graph all cached:", r"show cache, 20 entries:", r"a run building one small step:",
                r"runs, \d+ runs, every record read:", r"runs, \d+ runs, rows kept:",
                r"plan of that graph among 1,000 more recipes:", r"first plan of the BERT app, new cache:"]
    for line, label in zip(lines[1:], expected):
        found = re.match(label + " +" + SECONDS + r"  \((\d+\.\d)x bare[;)]", line)
        assert found, line
        median, ratio = float(found.group(1)), float(found.group(3))
        assert median > 0 and _ratio_of(ratio, median, bare, 0.0005), line   # the seconds printed to 3 decimals
    assert "goal < 0.10 s" in lines[1] and "goal < 0.20 s with 1000" in lines[2]


@pytest.mark.slow  # about 3 s on a 2-core machine
def test_sweep_overhead_prints_a_sweep_and_a_plain_loop_of_the_same_points():
    result = _bench("bench.sweep_overhead", "--points", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 4, lines
    per = r" +(\d+\.\d\d) s \((\d+) ms/point\)$"
    first = re.match(r"sweep of 2 points, first \(builds each step\):" + per, lines[0])
    warm = re.match(r"sweep of 2 cached points \(--rerun\):" + per, lines[1])
    loop = re.match(r"2 cached `mlrun` runs in a plain loop:" + per, lines[2])
    assert first and warm and loop, lines
    for found in (first, warm, loop):
        assert abs(float(found.group(1)) / 2 * 1000 - int(found.group(2))) <= 3, found.group(0)
    adds = re.match(r"what the sweep adds per point: (-?\d+) ms \(ratio sweep/loop (\d+\.\d\d)\)$", lines[3])
    assert adds, lines[3]
    sweep_s, loop_s = float(warm.group(1)), float(loop.group(1))
    assert abs(int(adds.group(1)) - (sweep_s - loop_s) / 2 * 1000) <= 6
    assert _ratio_of(float(adds.group(2)), sweep_s, loop_s, 0.005), lines   # the seconds printed to 2 decimals
