"""bard_sdk generation: batches equal single rows, sessions continue exactly, scores, streams."""

from __future__ import annotations

import threading
from pathlib import Path

import bard_sdk
import numpy as np
import pytest
from bard_sdk.runtime import BoundRunner, HostRunner

from tests.conftest import wrapped

PROMPTS = ["ROMEO:", "", "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\n"
           "Speak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?",
           "K"]


class CountingRunner:
    """Wraps a runner to count onnxruntime calls and the rows and steps in each."""

    def __init__(self, inner: HostRunner) -> None:
        self.inner = inner
        self.calls: list[tuple[int, ...]] = []

    def state(self, h: np.ndarray, c: np.ndarray):  # type: ignore[no-untyped-def]
        return self.inner.state(h, c)

    def step(self, tokens: np.ndarray, state):  # type: ignore[no-untyped-def]
        self.calls.append(tokens.shape)
        return self.inner.step(tokens, state)


def test_single_prompt_returns_a_string(model: bard_sdk.Model) -> None:
    text = model.generate("ROMEO:", 40, seed=3)
    assert isinstance(text, str) and len(text) == 40
    assert set(text) <= set(model.vocab.chars)


def test_list_returns_a_list(model: bard_sdk.Model) -> None:
    texts = model.generate(["a", "b"], 10, seed=[1, 2])
    assert isinstance(texts, list) and [len(t) for t in texts] == [10, 10]


def test_same_seed_same_text_and_different_seeds_differ(model: bard_sdk.Model) -> None:
    a = model.generate("ROMEO:", 80, seed=11)
    assert a == model.generate("ROMEO:", 80, seed=11)
    assert a != model.generate("ROMEO:", 80, seed=12)


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0])
def test_batch_rows_equal_rows_alone(model: bard_sdk.Model, temperature: float) -> None:
    seeds = [5, 6, 7, 8]
    batched = model.generate(PROMPTS, 60, temperature=temperature, seed=seeds, top_k=30)
    alone = [model.generate(p, 60, temperature=temperature, seed=s, top_k=30)
             for p, s in zip(PROMPTS, seeds)]
    assert batched == alone


def test_batch_rows_equal_rows_alone_with_top_p_and_stops(model: bard_sdk.Model) -> None:
    seeds = [21, 22, 23, 24]
    kwargs = dict(temperature=0.9, top_p=0.8, stop=["\n", "e"])
    batched = model.generate(PROMPTS, 50, seed=seeds, **kwargs)
    alone = [model.generate(p, 50, seed=s, **kwargs) for p, s in zip(PROMPTS, seeds)]
    assert batched == alone


def test_prefill_is_one_call_and_finished_rows_leave_the_batch(model: bard_sdk.Model) -> None:
    counted, counting = wrapped(model, CountingRunner)
    texts = counted.generate(PROMPTS, 30, temperature=1.0, seed=[1, 2, 3, 4], stop="e")
    longest = max(len(p) for p in PROMPTS)
    assert counting.calls[0] == (4, longest), "all prompts prefilled in one call"
    assert all(shape[1] == 1 for shape in counting.calls[1:]), "then one character per call"
    rows_per_call = [shape[0] for shape in counting.calls[1:]]
    assert rows_per_call == sorted(rows_per_call, reverse=True)
    finished = [t for t in texts if t.endswith("e")]
    assert finished, "with stop='e' some row stops early"
    assert rows_per_call[-1] < 4 or len(finished) == 0


def test_stop_string_ends_the_row_and_is_included(model: bard_sdk.Model) -> None:
    free = model.generate("ROMEO:", 200, seed=9)
    assert "\n" in free
    stopped = model.generate("ROMEO:", 200, seed=9, stop="\n")
    assert stopped == free[: free.index("\n") + 1]


def test_stream_yields_the_same_text(model: bard_sdk.Model) -> None:
    whole = model.generate("ROMEO:", 50, seed=4, temperature=0.8)
    assert "".join(model.stream("ROMEO:", 50, seed=4, temperature=0.8)) == whole
    batch = model.generate(["a", "bb"], 20, seed=[1, 2])
    pieces: dict[int, str] = {0: "", 1: ""}
    for row, piece in model.stream(["a", "bb"], 20, seed=[1, 2]):
        pieces[row] += piece
    assert [pieces[0], pieces[1]] == batch


def test_session_continues_exactly(model: bard_sdk.Model) -> None:
    session = model.session("ROMEO:")
    first = session.generate(30, temperature=0)
    second = session.generate(30, temperature=0)
    assert first + second == model.generate("ROMEO:", 60, temperature=0)


def test_session_feed_equals_prompt(model: bard_sdk.Model) -> None:
    session = model.session("First Cit")
    session.feed("izen:\nBefore we")
    assert session.generate(40, temperature=0) == model.generate(
        "First Citizen:\nBefore we", 40, temperature=0)


def test_session_fork_and_state_round_trip(model: bard_sdk.Model, tmp_path: Path) -> None:
    session = model.session("KING RICHARD III:\n")
    session.generate(17, temperature=0.8, seed=1)
    fork = session.fork()
    state = session.export_state()
    np.savez(tmp_path / "state.npz", **state)
    expected = session.generate(40, temperature=0.8, seed=2)
    assert fork.generate(40, temperature=0.8, seed=2) == expected
    loaded = dict(np.load(tmp_path / "state.npz", allow_pickle=False))
    restored = bard_sdk.Session.restore(model, loaded)
    assert restored.generate(40, temperature=0.8, seed=2) == expected


def test_empty_prompt_starts_from_zero_state(model: bard_sdk.Model) -> None:
    assert model.generate("", 30, temperature=0) == model.session().generate(30, temperature=0)
    assert model.generate("", 30, temperature=0) == model.generate("\n", 30, temperature=0)


def test_score_is_per_character_log_likelihood(model: bard_sdk.Model) -> None:
    text = "ROMEO:\nWhat light through yonder window breaks?"
    score = model.score(text)
    assert score.characters == len(text) - 1
    assert score.bits_per_char == pytest.approx(score.nats_per_char / np.log(2))
    ids = model.encode(text)
    logits, _, _ = model.forward(ids[None, :-1], *model.zero_state(1))
    z = logits[0].astype(np.float64)
    log_p = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(
        1, keepdims=True)
    assert score.total_nats == pytest.approx(-log_p[np.arange(len(ids) - 1), ids[1:]].sum())
    chunked = model.score(text * 200)  # longer than one scoring chunk: state is carried
    session = model.session(text * 200)
    assert session.length == len(text) * 200
    assert chunked.characters == len(text) * 200 - 1


def test_unknown_characters(model: bard_sdk.Model) -> None:
    with pytest.raises(bard_sdk.UnknownCharacterError, match=r"'\[' at 4, '\]' at 10"):
        model.generate("Ham [aside]", 5)
    skipped = model.generate("Ham [aside]", 20, temperature=0, on_unknown="skip")
    assert skipped == model.generate("Ham aside", 20, temperature=0)
    replaced = model.score("Ham [aside]", on_unknown="replace", replacement=" ")
    assert replaced.characters == len("Ham [aside]") - 1
    with pytest.raises(ValueError, match="replacement"):
        model.score("x[", on_unknown="replace", replacement="[")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"temperature": -0.1}, "temperature"), ({"top_k": 0}, "top_k"),
     ({"top_k": 66}, "top_k"), ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"),
     ({"max_new_chars": -1}, "max_new_chars"), ({"temperature": float("nan")}, "temperature"),
     ({"seed": "x"}, "seed"), ({"stop": ""}, "stop")],
)
def test_bad_arguments(model: bard_sdk.Model, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        model.generate("ROMEO:", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("prompt", [[], 42, ["ok", 3], None])
def test_bad_prompts(model: bard_sdk.Model, prompt: object) -> None:
    with pytest.raises(ValueError, match="prompt"):
        model.generate(prompt)  # type: ignore[arg-type]


def test_stream_checks_arguments_at_the_call(model: bard_sdk.Model) -> None:
    with pytest.raises(ValueError, match="temperature"):
        model.stream("a", temperature=-1)


def test_threads_share_one_model(model: bard_sdk.Model) -> None:
    prompts = [f"{name}:\n" for name in ("ROMEO", "JULIET", "HAMLET", "LEAR", "BRUTUS", "IAGO")]
    expected = {p: model.generate(p, 60, seed=i, temperature=0.9) for i, p in enumerate(prompts)}
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def work(i: int, prompt: str) -> None:
        try:
            for _ in range(3):
                results[prompt] = model.generate(prompt, 60, seed=i, temperature=0.9)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i, p)) for i, p in enumerate(prompts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == expected


def test_device_state_runner_matches_host_runner(model: bard_sdk.Model) -> None:
    host = model.generate(PROMPTS, 40, seed=[1, 2, 3, 4], temperature=0.8, stop="a")
    # the CUDA path's IOBinding, on the CPU
    bound_model = model.with_runner(lambda host: BoundRunner(host.session, "cpu"))
    bound = bound_model.generate(PROMPTS, 40, seed=[1, 2, 3, 4], temperature=0.8, stop="a")
    bound_session = bound_model.session("ROMEO:").generate(20, temperature=0)
    assert bound == host
    assert bound_session == model.generate("ROMEO:", 20, temperature=0)


def test_int8_variant_generates(tiny_artifact: Path) -> None:
    int8 = bard_sdk.load(tiny_artifact, variant="int8")
    assert int8.variant == "int8" and int8.device == "cpu"
    assert len(int8.generate(["ROMEO:", "x"], 30, seed=[1, 2])[1]) == 30
