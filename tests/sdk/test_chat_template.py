"""Chat templates: messages -> prompt through the manifest's declarative template, the default
for artifacts without one, characters outside the vocabulary named by message and position."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bard_sdk
import pytest
from bard_sdk import DEFAULT_CHAT_TEMPLATE, ArtifactError, ChatTemplate, UnknownCharacterError
from bard_sdk.chat_template import UnknownChatCharacterError
from bard_sdk.schema import manifest_schema

jsonschema = pytest.importorskip("jsonschema")

CONVERSATION = [{"role": "system", "content": "Verona. A street."},
                {"role": "user", "content": "Good morrow."},
                {"role": "assistant", "content": "And to you."},
                {"role": "user", "content": "What news?"}]


def edit_manifest(directory: Path, change: Any) -> None:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_export_writes_the_default_and_it_is_schema_valid(tiny_artifact: Path) -> None:
    manifest = json.loads((tiny_artifact / "manifest.json").read_text())
    assert manifest["chat_template"] == DEFAULT_CHAT_TEMPLATE.to_json()
    assert manifest["format_version"] == bard_sdk.FORMAT_VERSION == 2
    jsonschema.validate(manifest, manifest_schema())


def test_play_script_prompt(model: bard_sdk.Model) -> None:
    prompt = model.chat_prompt(CONVERSATION)
    assert prompt.text == ("Verona. A street.\n\nROMEO:\nGood morrow.\n\nJULIET:\nAnd to you."
                           "\n\nROMEO:\nWhat news?\n\nJULIET:\n")
    assert prompt.stop == ("\n\n",) and prompt.speaker == "JULIET"


def test_names_pick_the_speakers_and_the_reply_follows_the_last_named_assistant(
        model: bard_sdk.Model) -> None:
    messages = [{"role": "system", "name": "CHORUS", "content": "Two households."},
                {"role": "user", "name": "HAMLET", "content": "Speak."},
                {"role": "assistant", "name": "HORATIO", "content": "My lord?"},
                {"role": "user", "name": "HAMLET", "content": "Again."}]
    prompt = model.chat_prompt(messages)
    assert prompt.text == ("CHORUS:\nTwo households.\n\nHAMLET:\nSpeak.\n\nHORATIO:\nMy lord?"
                           "\n\nHAMLET:\nAgain.\n\nHORATIO:\n")
    assert prompt.speaker == "HORATIO"


def test_placeholders_in_messages_stay_text(model: bard_sdk.Model) -> None:
    """One pass, no re-reading and no str.format: "{speaker}" in a message is just text."""
    tricky = "x {speaker} {text} {0} {text.__class__}"
    if any(ch not in model.vocab for ch in tricky):
        tricky = "x speaker text"
    prompt = model.chat_prompt([{"role": "user", "content": tricky}])
    assert prompt.text == f"ROMEO:\n{tricky}\n\nJULIET:\n"


def test_chat_is_the_generation_up_to_the_turn_boundary(model: bard_sdk.Model) -> None:
    prompt = model.chat_prompt(CONVERSATION)
    boundaries = 0
    for seed in range(6):
        full = model.generate(prompt.text, 300, seed=seed, temperature=0.9, stop="\n\n")
        reply = model.chat(CONVERSATION, 300, seed=seed, temperature=0.9)
        if full.endswith("\n\n"):
            boundaries += 1
            assert reply == full[:-2]
        else:
            assert reply == full and len(full) == 300
        assert "\n\n" not in reply
    assert boundaries, "no reply reached the turn boundary in 6 seeds"


def test_unknown_characters_are_named_by_message_field_and_position(
        model: bard_sdk.Model) -> None:
    messages = [{"role": "user", "content": "fine"}, {"role": "user", "content": "a{b}c"}]
    with pytest.raises(UnknownChatCharacterError) as caught:
        model.chat_prompt(messages)
    err = caught.value
    assert isinstance(err, UnknownCharacterError)
    assert (err.message_index, err.field, err.positions) == (1, "content", [1, 3])
    assert "messages[1].content" in str(err) and "'{' at 1" in str(err)
    with pytest.raises(UnknownChatCharacterError, match=r"messages\[0\]\.name"):
        model.chat_prompt([{"role": "user", "name": "R{", "content": "hi"}])
    replaced = model.chat_prompt(messages, on_unknown="replace", replacement="?")
    assert "a?b?c" in replaced.text
    assert "abc" in model.chat_prompt(messages, on_unknown="skip").text


@pytest.mark.parametrize("messages", [
    [], "hello", [{"role": "tool", "content": "x"}], [{"role": "user"}],
    [{"role": "user", "content": 5}], [{"role": "user", "content": "x", "extra": 1}],
    [{"role": "user", "content": "x", "name": "A\nB"}],
    [{"role": "user", "content": "x", "name": ""}]])
def test_bad_messages_are_refused(model: bard_sdk.Model, messages: Any) -> None:
    with pytest.raises(bard_sdk.InvalidArgumentError):
        model.chat_prompt(messages)


def test_an_artifact_without_a_template_gets_the_default(artifact_copy: Path,
                                                         model: bard_sdk.Model) -> None:
    edit_manifest(artifact_copy, lambda m: m.pop("chat_template"))
    old = bard_sdk.load(artifact_copy, device="cpu")
    assert old.chat_template == DEFAULT_CHAT_TEMPLATE
    assert old.chat_prompt(CONVERSATION) == model.chat_prompt(CONVERSATION)
    bundled = bard_sdk.load(device="cpu")  # a format 1 manifest, from before templates
    assert "chat_template" not in bundled.manifest.raw
    assert bundled.manifest.raw["format_version"] == 1
    assert bundled.chat_prompt(CONVERSATION).text.endswith("JULIET:\n")


def test_the_manifest_template_is_used(artifact_copy: Path) -> None:
    custom = {"turn": "{speaker}: {text}\n", "system": "-- {text}\n", "reply": "{speaker}:",
              "stop": ["\n"], "speakers": {"user": "A", "assistant": "B"}}
    edit_manifest(artifact_copy, lambda m: m.update(chat_template=custom))
    model = bard_sdk.load(artifact_copy, device="cpu")
    prompt = model.chat_prompt(CONVERSATION)
    assert prompt.text == "-- Verona. A street.\nA: Good morrow.\nB: And to you.\nA: What news?\nB:"
    assert prompt.stop == ("\n",)
    for seed in range(3):
        reply = model.chat(CONVERSATION, 200, seed=seed)
        assert "\n" not in reply
        assert model.generate(prompt.text, 200, seed=seed, stop="\n").startswith(reply)


@pytest.mark.parametrize(("change", "message"), [
    ({"turn": "{speaker}: no text\n"}, "turn must hold {text} exactly once"),
    ({"turn": "{text}{text}"}, "turn must hold {text} exactly once"),
    ({"reply": "{text}"}, "reply must hold {text} not at all"),
    ({"system": "{speaker}{text}"}, "system must hold {speaker} not at all"),
    ({"speakers": {"user": "A\n", "assistant": "B"}}, "one line"),
    ({"stop": []}, "at least 1"),
    ({"code": "{% for m in messages %}"}, "unexpected key 'code'"),
])
def test_bad_templates_are_refused_at_load(artifact_copy: Path, change: dict[str, Any],
                                           message: str) -> None:
    edit_manifest(artifact_copy, lambda m: m["chat_template"].update(change))
    with pytest.raises(ArtifactError, match=message.replace("{", r"\{").replace("}", r"\}")):
        bard_sdk.load(artifact_copy, device="cpu")


def test_a_template_outside_the_vocabulary_cannot_chat(artifact_copy: Path) -> None:
    edit_manifest(artifact_copy, lambda m: m["chat_template"].update(reply="{speaker}~"))
    model = bard_sdk.load(artifact_copy, device="cpu")  # loading still works
    assert model.generate("ROMEO:", 5, seed=1)
    with pytest.raises(ArtifactError, match=r"cannot chat.*'~'"):
        model.chat_prompt(CONVERSATION)


def test_template_round_trips_through_json() -> None:
    raw = DEFAULT_CHAT_TEMPLATE.to_json()
    assert ChatTemplate.from_json(json.loads(json.dumps(raw))) == DEFAULT_CHAT_TEMPLATE
