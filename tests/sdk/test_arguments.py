"""Every argument a caller can get wrong is an InvalidArgumentError (a ValueError and a
BardError) raised before any work; numbers are Python or numpy alike, bool never."""

from __future__ import annotations

import bard_sdk
import numpy as np
import pytest
from bard_sdk.model import MAX_NEW_CHARS
from bard_sdk.sampling import TEMPERATURE_FLOOR


def test_the_error_family() -> None:
    assert issubclass(bard_sdk.InvalidArgumentError, bard_sdk.BardError)
    assert issubclass(bard_sdk.InvalidArgumentError, ValueError)


def test_numpy_numbers_are_numbers(model: bard_sdk.Model) -> None:
    plain = model.generate("ROMEO:", 30, temperature=0.75, top_k=20, top_p=0.875, seed=7)
    numpy = model.generate("ROMEO:", np.int64(30), temperature=np.float32(0.75),
                           top_k=np.int32(20), top_p=np.float64(0.875), seed=np.uint64(7))
    assert numpy == plain
    batch = model.generate(["a", "b"], np.int16(5), seed=np.array([1, 2]))
    assert batch == model.generate(["a", "b"], 5, seed=[1, 2])
    session = model.session("ROMEO:")
    assert session.generate(np.int64(10), temperature=np.float16(0.5), seed=np.int8(3)) == \
        model.session("ROMEO:").generate(10, temperature=0.5, seed=3)
    assert bard_sdk.load(model.manifest.directory, threads=np.int64(1)).device == "cpu"


def test_spin_false_lets_the_pool_sleep_and_changes_no_output(model: bard_sdk.Model) -> None:
    """`bard serve` loads with spin=False; the setting reaches onnxruntime and nothing else."""
    key = "session.intra_op.allow_spinning"
    sleeping = bard_sdk.load(model.manifest.directory, spin=False)
    options = sleeping._ort_session.get_session_options()
    assert options.get_session_config_entry(key) == "0"
    with pytest.raises(RuntimeError, match="does not have configuration"):
        model._ort_session.get_session_options().get_session_config_entry(key)
    assert sleeping.generate("ROMEO:", 40, seed=3) == model.generate("ROMEO:", 40, seed=3)


@pytest.mark.parametrize("temperature", [1e-320, 5e-324, 1e-9, TEMPERATURE_FLOOR / 2])
def test_tiny_temperatures_are_greedy(model: bard_sdk.Model, temperature: float) -> None:
    greedy = model.generate(["ROMEO:", "K"], 40, temperature=0)
    assert model.generate(["ROMEO:", "K"], 40, temperature=temperature, seed=[1, 2]) == greedy


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"temperature": True}, "temperature"), ({"temperature": float("inf")}, "temperature"),
     ({"temperature": "0.8"}, "temperature"), ({"temperature": 10**400}, "temperature"),
     ({"top_k": True}, "top_k"), ({"top_k": 2.0}, "top_k"), ({"top_p": float("nan")}, "top_p"),
     ({"top_p": np.bool_(True)}, "top_p"), ({"max_new_chars": True}, "max_new_chars"),
     ({"max_new_chars": 5.0}, "max_new_chars"),
     ({"max_new_chars": MAX_NEW_CHARS + 1}, "max_new_chars"),
     ({"max_new_chars": 99999999999999999999}, "max_new_chars"),
     ({"max_new_chars": "5"}, "max_new_chars"), ({"seed": 1.5}, "seed"), ({"seed": "7"}, "seed"),
     ({"seed": True}, "seed"), ({"seed": -1}, "seed"), ({"seed": 2**64}, "seed"),
     ({"seed": [1, 2]}, "seeds"), ({"stop": 5}, "stop"), ({"stop": [""]}, "stop"),
     ({"stop": ["\n", 3]}, "stop"), ({"stop": "[aside]"}, "can never occur"),
     ({"on_unknown": "ignore"}, "on_unknown"),
     ({"on_unknown": "replace", "replacement": ["x"]}, "replacement")],
)
def test_bad_generate_arguments(model: bard_sdk.Model, kwargs: dict[str, object],
                                message: str) -> None:
    with pytest.raises(bard_sdk.InvalidArgumentError, match=message):
        model.generate("ROMEO:", **{"max_new_chars": 5, **kwargs})  # type: ignore[arg-type]


def test_a_stop_string_that_can_never_occur_names_the_characters(
        model: bard_sdk.Model) -> None:
    with pytest.raises(bard_sdk.InvalidArgumentError, match=r"'\[', '\]' not in the model"):
        model.generate("ROMEO:", 5, stop=["\n", "[aside]"])


@pytest.mark.parametrize(
    ("call", "message"),
    [(lambda m: m.session().generate(5, seed=[1]), "seed"),
     (lambda m: m.session().generate(5, seed=1.5), "seed"),
     (lambda m: m.session().generate(5, seed="7"), "seed"),
     (lambda m: m.session().generate(5, stop=5), "stop"),
     (lambda m: m.session().generate(10**10), "max_new_chars"),
     (lambda m: m.session().feed(5), "text"), (lambda m: m.session(5), "prompt"),
     (lambda m: m.score(b"bytes"), "text"), (lambda m: m.generate(42), "prompt"),
     (lambda m: bard_sdk.load(5), "path"),
     (lambda m: bard_sdk.load(m.manifest.directory, device=5), "device"),
     (lambda m: bard_sdk.load(m.manifest.directory, variant=["fp32"]), "variant"),
     (lambda m: bard_sdk.load(m.manifest.directory, threads=True), "threads"),
     (lambda m: bard_sdk.load(m.manifest.directory, threads=0), "threads"),
     (lambda m: bard_sdk.load(m.manifest.directory, spin="no"), "spin")],
)
def test_bad_session_and_load_arguments(model: bard_sdk.Model, call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(bard_sdk.InvalidArgumentError, match=message):
        call(model)


def good_state(model: bard_sdk.Model) -> dict[str, np.ndarray]:
    session = model.session("ROMEO:")
    session.generate(5, seed=1)
    return session.export_state()


@pytest.mark.parametrize(
    ("change", "message"),
    [(lambda s: {}, "must hold 'h' and 'c'"),
     (lambda s: {"h": s["h"]}, "must hold 'h' and 'c'"),
     (lambda s: {**s, "extra": np.zeros(1)}, "extra"),
     (lambda s: {**s, "h": s["h"][:, :, :-1]}, "shape"),
     (lambda s: {**s, "c": s["c"].astype(object)}, "numeric"),
     (lambda s: {**s, "c": s["c"].tolist()}, "numeric"),
     (lambda s: {**s, "h": np.full_like(s["h"], np.nan)}, "non-finite"),
     (lambda s: {**s, "logits": np.full_like(s["logits"], np.inf)}, "non-finite"),
     (lambda s: {**s, "h": s["h"].astype(np.float64) * 1e300}, "non-finite"),
     (lambda s: {**s, "logits": s["logits"][:, :-1]}, "logits"),
     (lambda s: {**s, "length": np.array(-1)}, "length"),
     (lambda s: {**s, "length": np.array(2.5)}, "length"),
     (lambda s: {**s, "length": True}, "length"),
     (lambda s: {k: v for k, v in s.items() if k != "logits"}, "no logits"),
     (lambda s: [("h", s["h"])], "mapping")],
)
def test_restore_refuses_a_damaged_state(model: bard_sdk.Model, change, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(bard_sdk.InvalidArgumentError, match=message):
        bard_sdk.Session.restore(model, change(good_state(model)))


def test_restore_accepts_what_export_state_gives(model: bard_sdk.Model) -> None:
    state = good_state(model)
    restored = bard_sdk.Session.restore(model, {**state, "h": state["h"].astype(np.float64)})
    assert restored.length == 11
    fresh = bard_sdk.Session.restore(model, model.session().export_state())
    assert fresh.length == 0 and fresh.generate(10, temperature=0) == model.generate(
        "", 10, temperature=0)
