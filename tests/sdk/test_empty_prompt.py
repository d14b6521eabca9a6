"""The empty-prompt rule: an empty prompt starts from a newline; a model whose vocabulary has
none refuses empty prompts (in every entry point) instead of starting from id 0."""

from __future__ import annotations

from pathlib import Path

import bard_sdk
import pytest

from tests.sdk.hostile import edit_manifest


@pytest.fixture
def no_newline(artifact_copy: Path) -> bard_sdk.Model:
    """The tiny artifact with its newline renamed to a pilcrow: same graph, no "\\n"."""
    def rename(manifest: dict) -> None:
        manifest["vocabulary"] = ["¶" if ch == "\n" else ch for ch in manifest["vocabulary"]]
    edit_manifest(artifact_copy, rename)
    return bard_sdk.load(artifact_copy, device="cpu")


def test_an_empty_prompt_is_a_newline(tiny_artifact: Path) -> None:
    model = bard_sdk.load(tiny_artifact, device="cpu")
    assert model.generate("", 40, seed=5) == model.generate("\n", 40, seed=5)
    assert model.generate("[", 40, seed=5, on_unknown="skip") == model.generate("\n", 40,
                                                                             seed=5)


def test_without_a_newline_an_empty_prompt_is_refused_everywhere(
        no_newline: bard_sdk.Model) -> None:
    model = no_newline
    assert "\n" not in model.vocab
    calls = [lambda: model.generate("", 5), lambda: model.generate(["ROMEO:", ""], 5),
             lambda: model.generate("\n", 5, on_unknown="skip"),
             lambda: list(model.stream("", 5)), lambda: model.generate("", 5, num_beams=2),
             lambda: model.session().generate(5)]
    for call in calls:
        with pytest.raises(bard_sdk.InvalidArgumentError, match="no newline"):
            call()
    with bard_sdk.Engine(model) as engine, pytest.raises(bard_sdk.InvalidArgumentError,
                                                          match="no newline"):
        engine.submit("", 5)
    assert len(model.generate("ROMEO:", 5, seed=1)) == 5, "a prompt works as ever"
    session = model.session("KING")
    assert len(session.generate(5, seed=1)) == 5
