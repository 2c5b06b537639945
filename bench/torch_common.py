"""Shared pieces of the side-by-side scripts: installing PyTorch on demand, a median timer,
and running a condense Google Benchmark binary to collect its JSON results."""
import json
import os
import statistics
import subprocess
import sys
import time


def ensure_torch():
    """Imports torch, installing it (and numpy) with pip first when it is missing."""
    try:
        import torch  # noqa: F401
    except ImportError:
        print("installing torch with pip ...", flush=True)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "torch", "numpy"])


def timeit(fn, min_time=0.3, min_reps=3):
    """Median wall time of fn() in milliseconds, after one warm-up call."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def run_condense_bench(binary, threads, bench_filter=".*", min_time=0.3):
    """Runs a condense benchmark binary with CONDENSE_THREADS=threads and returns its
    'benchmarks' list (Google Benchmark JSON)."""
    if not os.path.exists(binary):
        sys.exit(f"{binary} not found: build the release preset first (cmake --preset release && "
                 f"cmake --build --preset release)")
    env = dict(os.environ, CONDENSE_THREADS=str(threads))
    print(f"running {binary} (threads={threads}) ...", flush=True)
    raw = subprocess.run([binary, f"--benchmark_filter={bench_filter}", "--benchmark_format=json",
                          f"--benchmark_min_time={min_time}"], env=env, check=True, capture_output=True,
                         text=True).stdout
    return json.loads(raw)["benchmarks"]


def to_ms(bench):
    """A Google Benchmark entry's real time in milliseconds."""
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[bench["time_unit"]]
    return bench["real_time"] * scale
