"""The `bard` command line: each command parses its options and calls one function.

torch lives behind the `train` extra, so `bard generate` and `bard eval` never import it:
training/ and export/ are imported inside the commands that need them. Errors a user can
cause become one line on stderr and exit code 2; a traceback means a bug in bard.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train character LSTMs, export them to ONNX, generate text.")

EXIT_USAGE = 2
EXIT_DIVERGED = 3


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    typer.echo(f"bard: error: {message}", err=True)
    raise typer.Exit(code)


def require_train_extra(command: str) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        fail(f"`bard {command}` needs PyTorch: pip install 'bard[train]'")


# The SDK's hints in the CLI's spelling: what to pass, as options, not keyword arguments.
CLI_SPELLING = (("on_unknown='replace' needs a replacement character",
                 "--on-unknown replace needs --replacement CHAR, a character"),
                ("device='cuda'", "--device cuda"),
                ("pass a path to load()", "pass --model DIR"))


def cli_message(err: BaseException) -> str:
    """An error's message with every hint in it spelled as options of this CLI."""
    import bard_sdk

    if isinstance(err, bard_sdk.UnknownCharacterError):
        return (f"{err.summary} (pass --on-unknown skip, or --on-unknown replace "
                "--replacement CHAR)")
    message = str(err)
    for api, cli in CLI_SPELLING:
        message = message.replace(api, cli)
    return message


@contextmanager
def user_errors(*kinds: type[BaseException]) -> Iterator[None]:
    """Map the errors a user can cause to one line and exit code 2."""
    try:
        yield
    except kinds as err:
        fail(cli_message(err))


@app.callback()
def root() -> None:
    """bard: character-level LSTM language models, from PyTorch training to ONNX generation."""


# ---------------------------------------------------------------------------- train

Opt = typer.Option


def train(
    out: Annotated[Path | None, Opt(help="Run directory to create.")] = None,
    resume: Annotated[Path | None, Opt(help="Continue the run in this directory.")] = None,
    data: Annotated[list[Path] | None, Opt(
        help="UTF-8 text file, or a folder of *.txt files (recursively, sorted by path); "
             "repeat to join several, in order (default: bundled Shakespeare).")] = None,
    init_from: Annotated[str | None, Opt(
        help="Fine-tune: start from this artifact directory, run directory or bundled model "
             "name (shakespeare); its architecture, its vocabulary plus the new text's "
             "characters.")] = None,
    preset: Annotated[str | None, Opt(
        help="tiny | shakespeare | finetune (default: tiny; finetune with --init-from)")] = None,
    device: Annotated[str, Opt(help="auto | cpu | cuda")] = "auto",
    threads: Annotated[int | None, Opt(help="CPU threads for PyTorch.")] = None,
    nproc: Annotated[int | None, Opt(help="Run under torchrun with N local processes.")] = None,
    quiet: Annotated[bool, Opt(help="No progress output.")] = False,
    extend: Annotated[bool, Opt(
        help="With --resume: allow --max-steps beyond the run's schedule (the learning rate "
             "is re-planned from the current step).")] = False,
    override: Annotated[bool, Opt(
        help="With --resume: allow a new --learning-rate, --min-learning-rate or "
             "--grad-clip (e.g. after a divergence).")] = False,
    **settings: Any,
) -> None:
    """Train a character LSTM (on the bundled Shakespeare corpus unless --data is given)."""
    require_train_extra("train")
    if nproc is not None:
        launch_torchrun(nproc)
    from bard.training.errors import StoppedBeforeStart, TrainingDiverged, UsageError
    from bard.training.train import RunRequest
    from bard.training.train import train as run_training

    if (out is None) == (resume is None):
        fail("give exactly one of --out RUN_DIR (a new run) or --resume RUN_DIR")
    request = RunRequest(out=resume or out, data=data or None, preset=preset,  # type: ignore[arg-type]
                         overrides=dict(settings), device=device, threads=threads,
                         resume=resume is not None, show_progress=not quiet, extend=extend,
                         override=override)
    try:
        with user_errors(UsageError):
            if init_from is not None:
                from bard.export.reimport import load_parent

                if resume is not None:
                    fail("--init-from starts a new run; a resumed run continues from its own "
                         "checkpoint (drop --init-from)")
                request.init_from = load_parent(init_from)
            result = run_training(request)
    except TrainingDiverged as err:
        fail(str(err), EXIT_DIVERGED)
    except StoppedBeforeStart as err:
        typer.echo(f"bard train: {err}", err=True)
        raise typer.Exit(128 + err.signum) from None
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 speaks for the job
    if result.stopped == "signal":
        typer.echo(f"stopped by signal at step {result.step}; resume with "
                   f"`bard train --resume {result.run_dir}`", err=True)
        raise typer.Exit(128 + result.signal)
    typer.echo(f"{result.stopped} at step {result.step}: {describe_losses(result)}; "
               f"run in {result.run_dir}")


def describe_losses(result: Any) -> str:
    """The figure compared during training (an evaluation subset on big corpora) and the
    best checkpoint's on the whole validation split, each said for what it is."""
    import math

    if not math.isfinite(result.best_val_loss):
        return "no evaluation yet"
    if result.eval_chars >= result.val_chars:
        return f"best val loss {result.best_val_loss:.4f} nats/char (whole validation split)"
    whole = ("" if result.whole_val_loss is None else
             f"; the best checkpoint on the whole split ({result.val_chars:,} characters): "
             f"{result.whole_val_loss:.4f}")
    return (f"best val loss {result.best_val_loss:.4f} nats/char on the evaluation subset "
            f"({result.eval_chars:,} characters){whole}")


def with_config_options(command: Any) -> Any:
    """Give `command` one `--option` per config field declared with `option(...)` in
    training/config.py (its help and extra flags come from there: one declaration per
    option), placed after `--preset`, all defaulting to None ("the preset's value")."""
    from bard.training.config import cli_options

    fixed = list(inspect.signature(command, eval_str=True).parameters.values())
    derived = [inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None,
        annotation=Annotated[kind | None, Opt(f"--{name.replace('_', '-')}", *flags,
                                              help=text, show_default=False)])
        for name, kind, text, flags in cli_options()]
    cut = [p.name for p in fixed].index("preset") + 1
    plain = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in fixed
             if p.kind is not inspect.Parameter.VAR_KEYWORD]
    command.__signature__ = inspect.Signature([*plain[:cut], *derived, *plain[cut:]],
                                              return_annotation=None)
    return command


app.command()(with_config_options(train))


# ---------------------------------------------------------------------------- export


@app.command("export")
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="Training run directory.")],
    out: Annotated[Path, Opt(help="Artifact directory to write.")],
    checkpoint: Annotated[str, Opt(help="best | last")] = "best",
    quantize: Annotated[str | None, Opt(help="Also write an int8 model: --quantize int8")] = None,
    force: Annotated[bool, Opt(help="Replace an existing output directory.")] = False,
    data: Annotated[list[Path] | None, Opt(
        help="The run's corpus (each --data it was trained with), if it has moved.")] = None,
    name: Annotated[str | None, Opt(help="Model name (default: output directory name).")] = None,
    heldout: Annotated[list[Path] | None, Opt(help="Held-out text to report in the card.")] = None,
    card_notes: Annotated[Path | None, Opt(help="Markdown appended to the model card.")] = None,
    chat_template: Annotated[Path | None, Opt(
        help="JSON chat template for the manifest (default: the play script).")] = None,
) -> None:
    """Export a run's checkpoint to ONNX + manifest + model card, behind a parity gate."""
    require_train_extra("export")
    from bard.export.export import ExportRequest, QualityGateError, export_run
    from bard.export.onnx_graph import GraphError
    from bard.export.parity import ParityError
    from bard.training.errors import UsageError

    if checkpoint not in ("best", "last"):
        fail(f"--checkpoint must be best or last, got {checkpoint!r}")
    request = ExportRequest(run_dir=run_dir, out=out, checkpoint=checkpoint, quantize=quantize,
                            force=force, data=data or None, name=name, heldout=heldout or [],
                            card_notes=card_notes, chat_template=chat_template,
                            command=" ".join(["bard", *sys.argv[1:]]))
    try:
        with user_errors(UsageError):
            result = export_run(request)
    except (ParityError, QualityGateError, GraphError) as err:
        fail(f"export refused, nothing written: {err}", 1)
    prov = result.manifest["provenance"]
    typer.echo(f"wrote {result.out}: val loss {prov['val_loss_nats']:.4f} nats/char "
               f"({prov['val_bpc']:.4f} bpc); parity max |logits diff| "
               f"{result.parity.max_logits_diff:.1e}")


# ---------------------------------------------------------------------------- generate / eval


MAX_SAMPLES = 100_000
STOP_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def load_model(model: Path | None, device: str, variant: str = "fp32",
               threads: int | None = None) -> Any:
    import bard_sdk
    from bard_sdk.display import printable

    with user_errors(bard_sdk.BardError):
        loaded = bard_sdk.load(model, device=device, variant=variant, threads=threads)
    typer.echo(f"[{printable(loaded.manifest.name)} on {loaded.device}, {variant}]", err=True)
    return loaded


def unescape_stop(text: str) -> str:
    """`--stop` as typed in a shell: \\n, \\t, \\r and \\\\ are escapes, any other backslash is
    an error (a silently literal one would be a stop string that never matches)."""
    out: list[str] = []
    chars = iter(text)
    for ch in chars:
        if ch != "\\":
            out.append(ch)
            continue
        escaped = next(chars, "")
        if escaped not in STOP_ESCAPES:
            fail(f"--stop {text!r}: unknown escape '\\{escaped}' (use \\n, \\t, \\r, or \\\\ "
                 "for a backslash)")
        out.append(STOP_ESCAPES[escaped])
    return "".join(out)


STDIN = "-"


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(
        help="Text to continue; - reads it from standard input.")] = "",
    prompt_file: Annotated[Path | None, Opt(
        help="Read the prompt from this UTF-8 file (for prompts too long for a command "
             "line).")] = None,
    model: Annotated[Path | None, Opt(help="Artifact directory (default: bundled).")] = None,
    n: Annotated[int, Opt("-n", "--max-new-chars",
                          help="Characters to generate (at most 10**9).")] = 300,
    temperature: Annotated[float, Opt(help="0 is greedy.")] = 0.8,
    top_k: Annotated[int | None, Opt()] = None,
    top_p: Annotated[float | None, Opt()] = None,
    seed: Annotated[int | None, Opt()] = None,
    num_samples: Annotated[int, Opt(help=f"Independent samples (one batch; at most "
                                         f"{MAX_SAMPLES:,}).")] = 1,
    stop: Annotated[list[str] | None, Opt(
        help="Stop after this string (repeatable); \\n, \\t, \\r and \\\\ are escapes, "
             "e.g. --stop '\\n\\n'.")] = None,
    stream: Annotated[bool, Opt(help="Print characters as they are made (several samples: "
                                     "side by side on a terminal, else one after another).")
                      ] = False,
    device: Annotated[str, Opt(help="auto | cpu | cuda")] = "auto",
    variant: Annotated[str, Opt(help="fp32 | int8")] = "fp32",
    on_unknown: Annotated[str, Opt(help="error | skip | replace")] = "error",
    replacement: Annotated[str | None, Opt(help="Character for --on-unknown replace.")] = None,
) -> None:
    """Generate text from an artifact (works without PyTorch)."""
    import bard_sdk

    if not 1 <= num_samples <= MAX_SAMPLES:
        fail(f"--num-samples must be in [1, {MAX_SAMPLES:,}], got {num_samples}")
    check_unknown_options(on_unknown, replacement)
    prompt = read_prompt(prompt, prompt_file)
    stops = None if stop is None else [unescape_stop(s) for s in stop]
    loaded = load_model(model, device, variant)
    prompts = [prompt] * num_samples
    # one int seeds sample i with seed + i, as the SDK does for a batch
    options: dict[str, Any] = dict(temperature=temperature, top_k=top_k, top_p=top_p,
                                   stop=stops, seed=seed, on_unknown=on_unknown,
                                   replacement=replacement)
    with user_errors(bard_sdk.BardError):
        if stream and num_samples == 1:
            pieces = loaded.stream(prompt, n, **options)  # checks every argument first
            typer.echo(prompt, nl=False)
            for piece in pieces:
                sys.stdout.write(piece)
                sys.stdout.flush()
            typer.echo("")
            return
        if stream:
            stream_samples(loaded.generator(prompts, max_new_chars=n, **options), prompt,
                           loaded.vocab.chars)
            return
        texts = loaded.generate(prompts, n, **options)
    for index, text in enumerate(texts):
        if num_samples > 1:
            typer.echo(f"--- sample {index + 1} ---")
        typer.echo(prompt + text)


def check_unknown_options(on_unknown: str, replacement: str | None) -> None:
    if on_unknown not in ("error", "skip", "replace"):
        fail(f"--on-unknown must be error, skip or replace, got {on_unknown!r}")
    if on_unknown == "replace" and replacement is None:
        fail("--on-unknown replace needs --replacement CHAR, a character of the model's "
             "vocabulary")
    if replacement is not None and on_unknown != "replace":
        fail("--replacement applies with --on-unknown replace")


def read_prompt(prompt: str, prompt_file: Path | None) -> str:
    """The prompt from the command line, a file (--prompt-file) or standard input (-)."""
    if prompt_file is not None:
        if prompt:
            fail("give the prompt as an argument or with --prompt-file, not both")
        return read_text_file(prompt_file)
    if prompt == STDIN:
        return read_stdin_text()
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes in argv arrive as lone surrogates
        fail("the prompt is not valid UTF-8 text")
    return prompt


def read_stdin_text() -> str:
    try:
        return sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as err:
        fail(f"standard input is not valid UTF-8 (byte offset {err.start})")


def stream_samples(gen: Any, prompt: str, chars: list[str]) -> None:
    """Several samples as they are made: side by side in a live view on a terminal; else
    (a pipe, a file) one after another in the unstreamed format ("--- sample i ---", the
    text), the first written as it is made and each later one as soon as the ones before it
    are complete: what it made meanwhile at once, then as it is made."""
    from rich.console import Console, Group
    from rich.live import Live
    from rich.panel import Panel

    count = len(gen.active)
    console = Console()
    if console.is_terminal:
        texts = [prompt] * count

        def view() -> Group:
            return Group(*(Panel(t, title=f"sample {i + 1}") for i, t in enumerate(texts)))

        with Live(view(), console=console, refresh_per_second=20) as live:
            while not gen.done:
                rows, ids = gen.step()
                for row, i in zip(rows.tolist(), ids.tolist()):
                    texts[row] += chars[i]
                live.update(view())
        return
    out, current = sys.stdout, 0
    held: list[list[str]] = [[] for _ in range(count)]
    out.write(f"--- sample 1 ---\n{prompt}")
    out.flush()
    while current < count:
        if gen.done and gen.finish_reason(current) is None:
            break  # cannot happen: a generator that is done has ended every row
        if not gen.done:
            rows, ids = gen.step()
            for row, i in zip(rows.tolist(), ids.tolist()):
                if row == current:
                    out.write(chars[i])
                else:
                    held[row].append(chars[i])
        while current < count and gen.finish_reason(current) is not None:
            out.write("\n")
            current += 1
            if current < count:
                out.write(f"--- sample {current + 1} ---\n{prompt}{''.join(held[current])}")
                held[current] = []
        out.flush()


@app.command("eval")
def eval_command(
    file: Annotated[Path, typer.Argument(help="UTF-8 text to score; - reads standard input.")],
    model: Annotated[Path | None, Opt(help="Artifact directory (default: bundled).")] = None,
    split: Annotated[str, Opt(help="all | val (the last --val-fraction) | train")] = "all",
    val_fraction: Annotated[float, Opt()] = 0.1,
    device: Annotated[str, Opt(help="auto | cpu | cuda")] = "auto",
    variant: Annotated[str, Opt(help="fp32 | int8")] = "fp32",
    on_unknown: Annotated[str, Opt(help="error | skip | replace")] = "error",
    replacement: Annotated[str | None, Opt(help="Character for --on-unknown replace.")] = None,
    json_out: Annotated[bool, Opt("--json", help="Print the result as JSON.")] = False,
    progress: Annotated[bool | None, Opt(
        "--progress/--no-progress",
        help="A progress bar on stderr: characters per second, time left (default: when "
             "stderr is a terminal).")] = None,
) -> None:
    """Score a text: loss in nats per character and bits per character (works without
    PyTorch). Any size: the text is read in pieces, never held whole; Ctrl-C stops it."""
    import json

    import bard_sdk
    from bard_sdk.display import printable
    from bard_sdk.scoring import count_characters

    if split not in ("all", "val", "train"):
        fail(f"--split must be all, val or train, got {split!r}")
    if not 0 < val_fraction < 1:
        fail(f"--val-fraction must be in (0, 1), got {val_fraction}")
    check_unknown_options(on_unknown, replacement)
    from_stdin = str(file) == STDIN
    if from_stdin and split != "all":
        fail("--split val and train need a file (standard input can be read only once)")
    stream = sys.stdin.buffer if from_stdin else open_text_file(file)
    show = sys.stderr.isatty() if progress is None else progress
    total, done = None, [0]
    with interruptible("nothing was scored", done), stream:
        if not from_stdin and (split != "all" or show):
            total = count_characters(stream)
            stream.seek(0)
        cut = 0 if total is None else int(total * (1 - val_fraction))
        start, end = {"all": (0, None), "val": (cut, None), "train": (0, cut)}[split]
        loaded = load_model(model, device, variant)
        goal = None if total is None else (end if end is not None else total) - start
        with user_errors(bard_sdk.BardError), progress_bar(show, goal, start, done) as report:
            score = bard_sdk.score_stream(
                loaded, stream, on_unknown=on_unknown,  # type: ignore[arg-type]
                replacement=replacement, start=start, end=end, progress=report)
    # strict JSON: a text with no predictions (under 2 characters) has no loss, so null
    nats, bits = (x if math.isfinite(x) else None
                  for x in (score.nats_per_char, score.bits_per_char))
    result = {"file": str(file), "split": split, "characters": score.characters,
              "nats_per_char": nats, "bits_per_char": bits, "variant": variant}
    if json_out:
        typer.echo(json.dumps(result, allow_nan=False))
    elif nats is None or bits is None:
        typer.echo(f"{printable(str(file))} ({split}): nothing to score (a loss needs at least "
                   "2 characters)")
    else:
        typer.echo(f"{printable(str(file))} ({split}, {score.characters:,} predictions): "
                   f"{nats:.4f} nats/char, {bits:.4f} bits/char")


@contextmanager
def interruptible(what: str, done: list[int]) -> Iterator[None]:
    """Ctrl-C or SIGTERM during `what`: one line on stderr (how far it got, `done[0]`
    characters), exit code 128 + the signal; never a traceback."""
    import signal

    received = [signal.SIGINT]

    def on_signal(signum: int, _frame: object) -> None:
        received[0] = signum
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        yield
    except KeyboardInterrupt:
        fail(f"interrupted after {done[0]:,} characters; {what}", 128 + received[0])
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def progress_bar(enabled: bool, total: int | None, first: int,
                 done: list[int]) -> Iterator[Any]:
    """A `report(characters read)` callback that keeps `done[0]` and draws a bar on stderr
    (characters, characters per second, time left), or only keeps the count."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class CharsPerSecond(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{task.speed or 0:,.0f} chars/s")

    bar = Progress(TextColumn("scoring"), BarColumn(), TextColumn("{task.completed:,} chars"),
                   CharsPerSecond(), TimeRemainingColumn(),
                   console=Console(stderr=True, force_terminal=enabled or None),
                   disable=not enabled)
    task = bar.add_task("scoring", total=total)

    def report(position: int) -> None:
        done[0] = max(position - first, 0)
        bar.update(task, completed=min(done[0], total) if total is not None else done[0])

    with bar:
        yield report


def check_regular_file(path: Path) -> None:
    """A directory, FIFO, socket or device is a one-line error: a FIFO would block, a
    directory is not text. A missing file raises FileNotFoundError for the caller."""
    mode = path.stat().st_mode
    if stat.S_ISDIR(mode):
        fail(f"{path} is a directory, not a text file")
    if not stat.S_ISREG(mode):
        fail(f"{path} is not a regular file (a FIFO, socket or device?)")


def open_text_file(path: Path) -> Any:
    """A regular file opened for reading bytes; anything else is a one-line error."""
    try:
        check_regular_file(path)
        return path.open("rb")
    except FileNotFoundError:
        fail(f"file not found: {path}")
    except OSError as err:
        fail(f"cannot read {path}: {err.strerror or err}")


def read_text_file(path: Path) -> str:
    """A regular UTF-8 file's text; anything else is a one-line error."""
    try:
        check_regular_file(path)
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        fail(f"file not found: {path}")
    except UnicodeDecodeError as err:
        fail(f"file is not valid UTF-8: {path} (byte offset {err.start})")
    except OSError as err:
        fail(f"cannot read {path}: {err.strerror or err}")


# ---------------------------------------------------------------------------- bench


@app.command()
def bench(
    model: Annotated[Path | None, Opt(help="Artifact directory (default: bundled).")] = None,
    quick: Annotated[bool, Opt(help="A smoke run: small batches, few characters.")] = False,
    out: Annotated[Path, Opt(help="Where bench.json and bench.png go.")] = Path("bench-results"),
    threads: Annotated[int | None, Opt(help="Threads for every engine.")] = None,
    serving: Annotated[bool, Opt(help="Only the serving section: concurrent callers on "
                                      "Model, Engine and bard serve (serving.json).")] = False,
    device: Annotated[str, Opt(help="cpu | cuda (the SDK on CUDA against the CPU provider, "
                                    "and CUDA training).")] = "cpu",
    ray: Annotated[bool, Opt("--ray", help="With --serving: bard serve against Ray Serve "
                                           "with 1 and 2 replicas (ray-serving.json).")] = False,
    corpus_scale: Annotated[bool, Opt(
        help="Only the corpus-scale section: encoding speed and training memory on corpora "
             "built from the Python standard library's sources (with --quick: encoding "
             "only).")] = False,
    corpus_mb: Annotated[list[float] | None, Opt(
        help="Corpus sizes in MB for --corpus-scale (repeatable; default 100).")] = None,
    corpus_kind: Annotated[list[str] | None, Opt(
        help="python (uint16 ids) | python-ascii (uint8) for --corpus-scale (repeatable; "
             "default both).")] = None,
) -> None:
    """Measure generation and training speed of every engine side by side (BENCHMARKS.md)."""
    import bard_sdk

    if ray:
        if not serving:
            fail("--ray needs --serving")
        if importlib.util.find_spec("ray") is None:
            fail("`bard bench --serving --ray` needs the ray extra: pip install 'bard[ray]'")
        from bard.bench.ray_serving import run_ray_serving_bench

        with user_errors(bard_sdk.BardError):
            run_ray_serving_bench(model, quick, out, threads)
        return
    if serving:
        if device != "cpu":
            fail("--device applies to the engine bench; --serving runs on the CPU")
        from bard.bench.serving import run_serving_bench

        with user_errors(bard_sdk.BardError):
            run_serving_bench(model, quick, out, threads)
        return
    require_train_extra("bench")
    from bard.bench.run import run_bench

    if corpus_scale:
        from bard.bench.corpus_scale import VARIANTS, run_corpus_scale

        sizes = corpus_mb or [100.0]
        if any(not size > 1 for size in sizes):
            fail(f"--corpus-mb sizes must be above 1 (the baseline corpus), got {sizes}")
        kinds = tuple(corpus_kind or VARIANTS)
        if set(kinds) - set(VARIANTS):
            fail(f"--corpus-kind must be one of {', '.join(VARIANTS)}, got {', '.join(kinds)}")
        run_corpus_scale(sizes, out, variants=kinds, threads=threads, train=not quick)
        return

    with user_errors(bard_sdk.BardError):
        run_bench(model, quick, out, threads, device)


# ---------------------------------------------------------------------------- serve


@app.command()
def serve(
    model: Annotated[Path | None, Opt(help="Artifact directory (default: bundled).")] = None,
    host: Annotated[str, Opt(help="Address to bind (loopback unless you mean otherwise).")
                    ] = "127.0.0.1",
    port: Annotated[int, Opt(help="TCP port; 0 picks a free one (printed on start).")] = 8000,
    device: Annotated[str, Opt(help="auto | cpu | cuda")] = "auto",
    variant: Annotated[str, Opt(help="fp32 | int8")] = "fp32",
    threads: Annotated[int | None, Opt(help="onnxruntime intra-op threads (per replica with "
                                            "--ray; default there: --num-cpus).")] = None,
    max_active: Annotated[int, Opt(help="Rows generating at once (the batch).")] = 64,
    max_queued: Annotated[int, Opt(help="Requests waiting for a row; past it: HTTP 429.")
                          ] = 256,
    name: Annotated[str | None, Opt(help="Model id in the API (default: manifest name).")
                    ] = None,
    max_body_bytes: Annotated[int, Opt(help="Largest request body; past it: HTTP 413.")
                              ] = 1_000_000,
    api_key: Annotated[str | None, Opt(envvar="BARD_API_KEY", show_envvar=True,
                                       help="Require 'Authorization: Bearer KEY' on /v1 "
                                            "(default: none; a warning beyond loopback).")
                       ] = None,
    cors_origin: Annotated[list[str] | None, Opt(help="Allow this browser origin (CORS; "
                                                     "repeat for more; default: none).")
                           ] = None,
    drain_s: Annotated[float, Opt(help="On SIGTERM/SIGINT (with --ray: a replica stopping): "
                                       "seconds requests in flight get to finish.")] = 10.0,
    header_timeout_s: Annotated[float | None, Opt(help="Seconds a client may take to send a "
                                                       "request's headers (default 10; not "
                                                       "with --ray).")] = None,
    body_timeout_s: Annotated[float, Opt(help="Seconds between two parts of a request body; "
                                              "past it: HTTP 408.")] = 30.0,
    max_connections: Annotated[int | None, Opt(help="Open connections at once; past it: HTTP "
                                                    "503 (default 512; not with --ray).")
                               ] = None,
    ray: Annotated[bool, Opt("--ray", help="Serve replicas on a local Ray Serve instance "
                                           "(the ray extra).")] = False,
    replicas: Annotated[int | None, Opt(help="With --ray: a fixed number of replicas "
                                             "(default 1).")] = None,
    autoscale: Annotated[str | None, Opt(metavar="MIN:MAX", help="With --ray: autoscale "
                                         "between MIN and MAX replicas.")] = None,
    target_ongoing: Annotated[int | None, Opt(help="With --autoscale: requests per replica "
                                                   "to aim at (default: --max-active / 2).")
                              ] = None,
    num_cpus: Annotated[float | None, Opt(help="With --ray: CPUs each replica reserves "
                                               "(default 1).")] = None,
    num_gpus: Annotated[float | None, Opt(help="With --ray: GPUs each replica reserves "
                                               "(default 0).")] = None,
) -> None:
    """Serve a model over HTTP: OpenAI-compatible /v1/completions, a playground at /."""
    if not 0 <= port <= 65535:
        fail(f"--port must be in [0, 65535], got {port}")
    settings = serve_settings(model, device, variant, threads, max_active, max_queued, name,
                              front={"api_key": api_key or None,
                                     "cors_origins": list(cors_origin or ()),
                                     "max_body_bytes": max_body_bytes,
                                     "body_timeout_s": body_timeout_s, "drain_s": drain_s})
    connections = {"--header-timeout-s": header_timeout_s, "--max-connections": max_connections}
    if ray:
        given = [flag for flag, value in connections.items() if value is not None]
        if given:
            fail(f"{given[0]} does not apply with --ray: Ray's HTTP proxy owns the connections "
                 "(set its http_options instead)")
        serve_on_ray(settings, host, port, replicas, autoscale, target_ongoing, num_cpus,
                     num_gpus)
        return
    ray_only = {"--replicas": replicas, "--autoscale": autoscale,
                "--target-ongoing": target_ongoing, "--num-cpus": num_cpus,
                "--num-gpus": num_gpus}
    given = [flag for flag, value in ray_only.items() if value is not None]
    if given:
        fail(f"{given[0]} needs --ray")
    for flag, value in connections.items():
        if value is not None and not value > 0:
            fail(f"{flag} must be positive, got {value}")
    import bard_sdk

    from bard.serve.server import DEFAULT_MAX_CONNECTIONS, ServeOptions
    from bard.serve.server import serve as run_server
    from bard.serve.timeouts import DEFAULT_HEADER_TIMEOUT_S

    options = ServeOptions(settings=settings, host=host, port=port,
                           header_timeout_s=header_timeout_s or DEFAULT_HEADER_TIMEOUT_S,
                           max_connections=max_connections or DEFAULT_MAX_CONNECTIONS)
    try:
        with user_errors(bard_sdk.BardError):
            run_server(options)
    except OSError as err:
        fail(f"cannot serve on {host}:{port}: {err.strerror or err}")


def serve_settings(model: Path | None, device: str, variant: str, threads: int | None,
                   max_active: int, max_queued: int, name: str | None,
                   front: dict[str, Any]) -> Any:
    """The `ServeSettings` of `bard serve` and its Ray replicas (`front`: the front door's
    and the drain's); a refused value is a one-line error naming its option."""
    try:
        import pydantic

        from bard.serve.settings import ServeSettings
    except ImportError as err:
        fail(f"`bard serve` needs the serve extra: pip install 'bard[serve]' ({err.name} "
             "is missing)")
    try:
        return ServeSettings(model=None if model is None else str(model), device=device,
                             variant=variant, threads=threads, max_active=max_active,
                             max_queued=max_queued, name=name, **front)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        fail(f"--{'-'.join(map(str, first['loc'])).replace('_', '-')}: {first['msg']}")


# ---------------------------------------------------------------------------- web


@app.command()
def web(
    out: Annotated[Path, Opt(help="Folder to write the static site into.")],
    model: Annotated[Path | None, Opt(help="Artifact directory (default: bundled).")] = None,
    runtime: Annotated[str, Opt(help="onnxruntime-web: 'cdn' (the pinned release, fetched by "
                                     "the reader's browser) or the folder of a local `npm "
                                     "install onnxruntime-web` (copied in: works offline).")
                       ] = "cdn",
    webgpu: Annotated[bool, Opt(help="Include the WebGPU build (used where the browser has "
                                     "WebGPU; WASM otherwise).")] = True,
    serve: Annotated[bool, Opt("--serve", help="Then serve the site on this machine "
                                               "(cross-origin isolated: WASM threads work).")
                     ] = False,
    host: Annotated[str, Opt(help="With --serve: address to bind.")] = "127.0.0.1",
    port: Annotated[int, Opt(help="With --serve: TCP port; 0 picks a free one.")] = 8000,
) -> None:
    """Write a static site that runs the model in the reader's browser (onnxruntime-web)."""
    import bard_sdk

    from bard.web.site import SiteRequest, build_site

    if not 0 <= port <= 65535:
        fail(f"--port must be in [0, 65535], got {port}")
    with user_errors(bard_sdk.BardError):
        result = build_site(SiteRequest(out=out, model=model, runtime=runtime, webgpu=webgpu))
    source = ("copied from " + str(result.runtime.copy_from) if result.runtime.copy_from
              else "from " + result.runtime.base)
    typer.echo(f"wrote {result.out} ({result.bytes / 2**20:.1f} MiB): onnxruntime-web "
               f"{result.runtime.version} {source}")
    if serve:
        from bard.web.preview import serve as serve_site

        try:
            serve_site(result.out, host, port)
        except OSError as err:
            fail(f"cannot serve on {host}:{port}: {err.strerror or err}")


def parse_autoscale(value: str) -> tuple[int, int]:
    low, sep, high = value.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(low), int(high)
    except ValueError:
        fail(f"--autoscale must be MIN:MAX (two integers), got {value!r}")


def serve_on_ray(settings: Any, host: str, port: int, replicas: int | None,
                 autoscale: str | None, target_ongoing: int | None, num_cpus: float | None,
                 num_gpus: float | None) -> None:
    """`bard serve --ray`: the same API from replicas on a local Ray Serve instance. Every
    setting is checked before Ray is imported, let alone started."""
    if replicas is not None and autoscale is not None:
        fail("give --replicas or --autoscale, not both")
    if target_ongoing is not None and autoscale is None:
        fail("--target-ongoing needs --autoscale")
    bounds = None if autoscale is None else parse_autoscale(autoscale)
    try:
        from bard.serve.ray_settings import Scaling
    except ImportError as err:
        fail(f"`bard serve --ray` needs the ray extra: pip install 'bard[ray]' ({err.name} "
             "is missing)")
    import bard_sdk

    with user_errors(bard_sdk.BardError):
        scaling = Scaling(replicas=1 if replicas is None else replicas, autoscale=bounds,
                          target_ongoing=target_ongoing,
                          num_cpus=1.0 if num_cpus is None else num_cpus,
                          num_gpus=0.0 if num_gpus is None else num_gpus)
    try:
        from bard.serve.ray_local import LocalOptions, run_local
    except ImportError as err:
        fail(f"`bard serve --ray` needs the ray extra: pip install 'bard[ray]' ({err.name} "
             "is missing)")
    with user_errors(bard_sdk.BardError):
        run_local(LocalOptions(args=settings, scaling=scaling, host=host, port=port))


def launch_torchrun(nproc: int) -> NoReturn:
    """`bard train --nproc N ...` = `torchrun --standalone --nproc_per_node N -m bard train`."""
    if nproc < 1:
        fail(f"--nproc must be at least 1, got {nproc}")
    args = strip_option(sys.argv[2:], "--nproc")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "bard", "train", *args]
    raise typer.Exit(subprocess.call(command, env=os.environ.copy()))


def strip_option(args: list[str], name: str) -> list[str]:
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            kept.append(arg)
    return kept


def main() -> None:
    app()

