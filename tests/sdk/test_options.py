"""`GenerationOptions`: every public call builds one, checked once; its errors name their
parameter (what `bard serve` reports as OpenAI's `param`, without reading the message)."""

from __future__ import annotations

import dataclasses

import bard_sdk
import pytest
from bard_sdk.options import GenerationOptions


@pytest.mark.parametrize(("arguments", "param"), [
    ({"max_new_chars": -1}, "max_new_chars"), ({"temperature": -1}, "temperature"),
    ({"top_k": 0}, "top_k"), ({"top_p": 1.5}, "top_p"), ({"stop": ""}, "stop"),
    ({"stop": "\x00never"}, "stop"), ({"seed": -1}, "seed"), ({"seed": [1, 2, 3]}, "seed"),
    ({"num_beams": 0}, "num_beams"), ({"num_beams": 2, "temperature": 0.5}, "temperature"),
    ({"length_penalty": 99.0}, "length_penalty"), ({"logits_processors": [1]},
                                                    "logits_processors"),
])
def test_errors_name_their_parameter(model: bard_sdk.Model, arguments: dict[str, object],
                                     param: str) -> None:
    with pytest.raises(bard_sdk.InvalidArgumentError) as caught:
        model.generate(["a", "b"], **arguments)  # type: ignore[arg-type]
    assert caught.value.param == param
    with pytest.raises(bard_sdk.InvalidArgumentError) as again:
        model.options(rows=2, **arguments)
    assert again.value.param == param and str(again.value) == str(caught.value)


def test_unknown_prompt_characters_name_the_prompt(model: bard_sdk.Model) -> None:
    with pytest.raises(bard_sdk.UnknownCharacterError) as caught:
        model.generate("R{", 3)
    assert caught.value.param == "prompt"


def test_options_are_frozen_and_drive_every_call_alike(model: bard_sdk.Model) -> None:
    options = model.options(rows=2, max_new_chars=25, temperature=0.9, top_k=20, stop="\n",
                            seed=[3, 4])
    assert isinstance(options, GenerationOptions)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.max_new_chars = 5  # type: ignore[misc]
    expected = model.generate(["ROMEO:", "K"], 25, temperature=0.9, top_k=20, stop="\n",
                              seed=[3, 4])
    assert model.generate_checked(["ROMEO:", "K"], options) == expected
    single = model.options(max_new_chars=25, temperature=0.9, top_k=20, stop="\n", seed=4,
                           single_seed=True)
    with bard_sdk.Engine(model) as engine:
        assert engine.submit_checked("K", single).result().text == expected[1]
    session = model.session("K")
    assert session.generate(25, temperature=0.9, top_k=20, stop="\n", seed=4) == expected[1]
