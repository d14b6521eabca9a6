"""The chat template an export writes into the manifest: `--chat-template FILE` (the
manifest's `chat_template` object as JSON), or the default play script
(`bard_sdk.DEFAULT_CHAT_TEMPLATE`) when the vocabulary holds its characters."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bard.training.errors import UsageError
from bard_sdk import DEFAULT_CHAT_TEMPLATE, ArtifactError, ChatTemplate
from bard_sdk.manifest import parse_strict_json
from bard_sdk.schema import manifest_schema, schema_errors
from bard_sdk.vocab import Vocabulary

from .preflight import read_option_text

OPTION = "--chat-template"


def read_chat_template(path: Path | None) -> ChatTemplate | None:
    """The template a file holds, checked as the manifest's schema and the SDK check it
    (before the export work, so a bad file fails fast); None without a file."""
    if path is None:
        return None
    try:
        raw = parse_strict_json(read_option_text(path, OPTION))
    except ValueError as err:
        raise UsageError(f"{OPTION} {path} is not valid JSON ({err})") from None
    schema = manifest_schema()
    problems = schema_errors(raw, schema["properties"]["chat_template"], schema, "template")
    if problems:
        raise UsageError(f"{OPTION} {path} is not a chat template: " + "; ".join(problems[:5]))
    try:
        return ChatTemplate.from_json(raw)
    except ArtifactError as err:
        raise UsageError(f"{OPTION} {path}: {err}") from None


def chat_template_for(chosen: ChatTemplate | None, vocab: Vocabulary,
                      say: Callable[[str], None]) -> ChatTemplate | None:
    """The template to write: the chosen one (refused if the vocabulary lacks characters it
    writes), else the default if the vocabulary holds its characters, else none (the model
    cannot chat; said on stderr)."""
    template = chosen or DEFAULT_CHAT_TEMPLATE
    missing = template.missing_characters(vocab)
    if not missing:
        return template
    shown = ", ".join(map(repr, missing))
    if chosen is not None:
        raise UsageError(f"{OPTION}: the template writes characters the model's vocabulary "
                         f"lacks: {shown}")
    say(f"the vocabulary lacks {shown}, which the default chat template writes: the "
        f"artifact gets no chat template (give one of its own characters: {OPTION})")
    return None
