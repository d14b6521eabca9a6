"""`bard bench --corpus-scale`: the data path on big corpora (BENCHMARKS.md, "Corpus scale").

The corpus is built at run time from the running interpreter's own standard-library sources
(`*.py` under sysconfig's stdlib, site-packages excluded, files that are not UTF-8 skipped),
repeated to size, like char-rnn's Linux-source demo; an ASCII-only variant of the same text
measures a vocabulary that fits uint8 (the sources themselves need uint16). For each size:

- encoding speed: both passes of `bard train`'s encoder (scan, then ids into the token file);
- peak RSS (VmHWM) of `bard train --preset tiny --max-steps 20 --data CORPUS` in a child
  process: encoding, training, the bounded evaluation and the whole-split final score;
- what the corpus itself costs in memory: (peak RSS - the same command's on a 1 MB corpus
  with the same characters, so the same model) divided by the difference in characters.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bard.training.corpus import CorpusSource, complete_length, scan_corpus, write_tokens
from bard.training.fsutil import atomic_write_text
from bard.training.records import dumps
from bard_sdk.vocab import VocabularyBuilder

BASELINE_MB = 1.0
VARIANTS = ("python", "python-ascii")

# Runs `bard train` in this process and reports its own peak RSS. VmHWM, not ru_maxrss: Linux
# carries ru_maxrss over from the forking parent across exec.
TRAIN_SCRIPT = """
import sys
from bard.cli import main
sys.argv = ["bard", "train", *sys.argv[1:]]
try:
    main()
except SystemExit as stop:
    code = stop.code or 0
from bard.bench.procfs import peak_rss_kib
print("VmHWM_kB", peak_rss_kib())
sys.exit(code)
"""


@dataclass
class ScaleResult:
    variant: str
    corpus_bytes: int
    chars: int
    distinct_chars: int
    dtype: str
    encode_s: float
    encode_mb_per_s: float
    encode_cpu_mb_per_s: float  # per second of this process's CPU time: robust to a busy host
    load_average: float  # the host's 1-minute load average after the encoding
    encode_repeats: int  # the encoding figures are medians over these runs
    train_wall_s: float | None  # None: encoding only (--quick)
    train_peak_rss_mb: float | None
    baseline_peak_rss_mb: float | None
    corpus_bytes_per_char: float | None
    command: str | None


def stdlib_sources(ascii_only: bool) -> bytes:
    """The standard library's Python sources, concatenated in a fixed (sorted) order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts = []
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts or "dist-packages" in path.parts:
            continue
        try:
            data = path.read_bytes()
            data.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(data.decode("ascii", "ignore").encode() if ascii_only else data)
    return b"".join(parts)


def write_corpus(path: Path, variant: str, size: int, every_symbol: bool = False) -> None:
    """`size` bytes of the sources, repeated as needed, cut on a character boundary. With
    `every_symbol`, a last line holds each character of the whole sources once, so a small
    corpus has the vocabulary (and so the model) of a big one: the baseline."""
    blob = stdlib_sources(ascii_only=variant == "python-ascii")
    with path.open("wb") as out:
        for _ in range(size // len(blob)):
            out.write(blob)
        tail = blob[: size % len(blob)]
        out.write(tail[: complete_length(tail)])
        if every_symbol:
            builder = VocabularyBuilder()
            builder.feed(blob)
            out.write(("\n" + "".join(builder.vocabulary().chars) + "\n").encode())


def timed_encoding(corpus: Path, work: Path) -> tuple[float, float, int, int, str]:
    """Both passes of the encoder: (wall seconds, CPU seconds, characters, symbols, dtype)."""
    start, cpu = time.perf_counter(), time.process_time()
    scan = scan_corpus(CorpusSource(corpus))
    tokens = write_tokens(work, CorpusSource(corpus), scan.vocabulary, scan.sha256,
                          lambda _: None)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    for leftover in work.iterdir():
        leftover.unlink()
    return seconds, cpu, scan.length, len(scan.vocabulary), tokens.dtype.name


def train_peak(corpus: Path, run: Path, steps: int,
               threads: int | None) -> tuple[float, float, str]:
    args = ["--preset", "tiny", "--max-steps", str(steps), "--data", str(corpus),
            "--out", str(run), "--device", "cpu", "--quiet"]
    args += [] if threads is None else ["--threads", str(threads)]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, *args], capture_output=True,
                          text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"bard train failed ({done.returncode}): {done.stderr[-2000:]}")
    peak_kb = int(done.stdout.strip().splitlines()[-1].split()[1])
    return peak_kb / 1024, seconds, "bard train " + " ".join(args)


def run_corpus_scale(sizes_mb: list[float], out_dir: Path, steps: int = 20,
                     variants: tuple[str, ...] = VARIANTS, baseline_mb: float = BASELINE_MB,
                     threads: int | None = None, train: bool = True,
                     repeats: int = 3) -> list[ScaleResult]:
    """Each variant at each size; `train=False` measures the encoding only (minutes less:
    the training child's time is the whole-split evaluation of the best checkpoint)."""
    results = []
    with tempfile.TemporaryDirectory(prefix="bard-corpus-scale-") as tmp:
        work = Path(tmp)
        for variant in variants:
            base_peak = base_chars = None
            if train:
                base = work / f"{variant}-base.txt"
                write_corpus(base, variant, int(baseline_mb * 1e6), every_symbol=True)
                base_chars = timed_encoding(base, work / "enc")[2]
                base_peak = train_peak(base, work / "base-run", steps, threads)[0]
                remove_tree(work / "base-run")
            for size_mb in sizes_mb:
                corpus = work / f"{variant}-{size_mb:g}MB.txt"
                write_corpus(corpus, variant, int(size_mb * 1e6))
                size = corpus.stat().st_size
                runs = [timed_encoding(corpus, work / "enc") for _ in range(repeats)]
                _, _, chars, distinct, dtype = runs[0]
                encode_s = statistics.median(r[0] for r in runs)
                cpu_s = statistics.median(r[1] for r in runs)
                load = os.getloadavg()[0]
                peak = wall = per_char = command = None
                if train and base_peak is not None and base_chars is not None:
                    peak, wall, command = train_peak(corpus, work / "run", steps, threads)
                    remove_tree(work / "run")
                    per_char = (peak - base_peak) * 2**20 / max(chars - base_chars, 1)
                    command = (command.replace(str(corpus), f"<{variant} {size_mb:g} MB>")
                               .replace(str(work / "run"), "RUN"))
                corpus.unlink()
                results.append(ScaleResult(
                    variant, size, chars, distinct, dtype, encode_s, size / encode_s / 1e6,
                    size / cpu_s / 1e6, load, repeats, wall, peak, base_peak, per_char,
                    command))
                print(describe(results[-1]), file=sys.stderr, flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "corpus_scale.json",
                      dumps([asdict(r) for r in results], indent=1) + "\n")
    print(table(results))
    return results


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def describe(r: ScaleResult) -> str:
    return (f"  {r.variant} {r.corpus_bytes / 1e6:,.0f} MB ({r.distinct_chars} symbols, "
            f"{r.dtype}): encode {r.encode_mb_per_s:,.0f} MB/s ({r.encode_cpu_mb_per_s:,.0f} per "
            f"CPU second, load {r.load_average:.1f}), train peak RSS "
            f"{number(r.train_peak_rss_mb)} MB, corpus {number(r.corpus_bytes_per_char, 3)} "
            "bytes/char")


def table(results: list[ScaleResult]) -> str:
    lines = ["| corpus | MB | characters | symbols | ids | encode MB/s (per CPU s; load) | "
             "peak RSS MB (1 MB corpus) | corpus bytes/char | train wall s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r.variant} | {r.corpus_bytes / 1e6:,.0f} | {r.chars:,} | {r.distinct_chars} "
              f"| {r.dtype} | {r.encode_mb_per_s:,.0f} ({r.encode_cpu_mb_per_s:,.0f}; "
              f"{r.load_average:.1f}) | {number(r.train_peak_rss_mb)} "
              f"({number(r.baseline_peak_rss_mb)}) | {number(r.corpus_bytes_per_char, 3)} | "
              f"{number(r.train_wall_s)} |" for r in results]
    return "\n".join(lines)

