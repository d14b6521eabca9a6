"""Bounded memory: what long prompts and huge `max_new_chars` cost (BENCHMARKS.md).

    python -m bard.bench.memory [--model DIR] [--threads N] [--prompt-chars 1000000]
    python -m bard.bench.memory --chunk-ab     # prefill in one call against chunked calls

Each memory figure comes from a fresh subprocess (peak RSS is VmHWM: Linux carries ru_maxrss
over from the forking parent across exec). `--chunk-ab` times the prefill of a 1,000-character
prompt in one call against PREFILL_CHUNK-character calls, interleaved, in thread CPU time on
one thread (robust on a shared machine) and wall time. Needs only bard_sdk, not torch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

CHILD = """
import json, sys, time
import bard_sdk
model_dir, threads, case, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
model = bard_sdk.load(None if model_dir == "-" else model_dir, device="cpu", threads=threads)
base = "ROMEO:\\nBut soft, what light through yonder window breaks?\\n"
start = time.perf_counter()
if case == "prompt":          # one prompt of `size` characters, then one character
    model.generate((base * (size // len(base) + 1))[:size], 1, temperature=0)
elif case == "mixed":         # one prompt of `size` characters beside 39 short ones
    model.generate([(base * (size // len(base) + 1))[:size]] + ["ROMEO:"] * 39, 1,
                   temperature=0)
elif case == "until-stop":    # max_new_chars=size, ended by the first newline
    text = model.generate("ROMEO:", size, stop="\\n", temperature=0.8, seed=1)
    assert text.endswith("\\n"), text
seconds = time.perf_counter() - start
from bard.bench.procfs import peak_rss_kib
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_kib() / 1024}, allow_nan=False))
"""


def child(model: str, threads: int, case: str, size: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, model, str(threads), case, str(size)],
                         capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def first_char_ms(model_dir: str, threads: int, chars: int, repeats: int) -> list[float]:
    """Time to the first generated character after a `chars`-character prompt."""
    import bard_sdk

    model = bard_sdk.load(None if model_dir == "-" else model_dir, device="cpu",
                          threads=threads)
    prompt = ("ROMEO:\nBut soft, what light through yonder window breaks?\n" * 100)[:chars]
    model.generate(prompt, 1, temperature=0)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.generate(prompt, 1, temperature=0)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def chunk_ab(model_dir: str, chars: int, repeats: int) -> dict[str, dict[str, float]]:
    """Median and minimum milliseconds (thread CPU and wall) per prefill chunk size."""
    import bard_sdk
    from bard_sdk.generation import PREFILL_CHUNK, prefill

    model = bard_sdk.load(None if model_dir == "-" else model_dir, device="cpu", threads=1)
    ids = model.encode(("ROMEO:\nBut soft, what light through yonder window breaks?\n" * 100)
                       [:chars])
    chunks = {"one call": chars, f"chunks of {PREFILL_CHUNK}": PREFILL_CHUNK,
              f"chunks of {2 * PREFILL_CHUNK}": 2 * PREFILL_CHUNK}
    cpu: dict[str, list[float]] = {name: [] for name in chunks}
    wall: dict[str, list[float]] = {name: [] for name in chunks}
    for index in range(repeats + 1):
        for name, chunk in chunks.items():
            start, start_cpu = time.perf_counter(), time.thread_time()
            runner = model.runner  # bard's own bench: the raw prefill, chunk size varied
            prefill(runner, [ids], runner.state(*model.zero_state(1)), chunk=chunk)
            if index:  # the first round warms up
                cpu[name].append((time.thread_time() - start_cpu) * 1e3)
                wall[name].append((time.perf_counter() - start) * 1e3)
    return {name: {"cpu_median_ms": statistics.median(cpu[name]), "cpu_min_ms": min(cpu[name]),
                   "wall_median_ms": statistics.median(wall[name]),
                   "wall_min_ms": min(wall[name])} for name in chunks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="-", help="artifact directory (default: bundled)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-chars", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--chunk-ab", action="store_true", help="time prefill chunk sizes")
    args = parser.parse_args()
    if args.chunk_ab:
        print(json.dumps(chunk_ab(args.model, 1000, args.repeats), indent=1, allow_nan=False))
        return
    times = first_char_ms(args.model, args.threads, 1000, args.repeats)
    results = {
        "first_char_ms_1000": {"median": statistics.median(times), "min": min(times),
                               "max": max(times)},
        "prompt": child(args.model, args.threads, "prompt", args.prompt_chars),
        "mixed_5000_plus_39": child(args.model, args.threads, "mixed", 5000),
        "alone_5000": child(args.model, args.threads, "prompt", 5000),
        "until_stop_1e8": child(args.model, args.threads, "until-stop", 10**8),
    }
    print(json.dumps(results, indent=1, allow_nan=False))


if __name__ == "__main__":
    main()
