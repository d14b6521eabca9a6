"""Chat templates: how a conversation becomes the text a character model continues.

A bard artifact may carry its template in the manifest (`chat_template`); one without it gets
`DEFAULT_CHAT_TEMPLATE`, a play script as the shipped model read it in training: a speaker
line per message, a blank line between speeches.

    ROMEO:                      <- "turn": "{speaker}:\\n{text}\\n\\n", user -> ROMEO
    What light through yonder window breaks?

    JULIET:                     <- "reply": "{speaker}:\\n", assistant -> JULIET
    (the model writes here and stops at the blank line: "stop": ["\\n\\n"])

A template is data, never code. Hugging Face ships chat templates as Jinja programs; running
one from an artifact means running a program from whoever made the artifact inside the
server, and even sandboxed Jinja has had escapes and can loop or allocate without bound. An
artifact may come from anywhere, so bard's template is a handful of bounded strings with two
placeholders, `{speaker}` and `{text}`, filled in one pass by a regular expression: never by
`str.format`, which reaches attributes (`"{text.__class__}"`), and never re-scanned, so a
message holding "{speaker}" stays text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ArtifactError, InvalidArgumentError, UnknownCharacterError
from .vocab import OnUnknown, Vocabulary, code_points

PLACEHOLDER = re.compile(r"\{(speaker|text)\}")
# Roles as OpenAI names them; "developer" is the newer name of "system".
SYSTEM_ROLES = ("system", "developer")
SPEAKING_ROLES = ("user", "assistant")
ROLES = SYSTEM_ROLES + SPEAKING_ROLES
MAX_SPEAKER_CHARS = 64


class UnknownChatCharacterError(UnknownCharacterError):
    """A message's content or name holds characters outside the vocabulary: which message
    (`message_index`), which field (`field`: "content" or "name"), and the positions in it."""

    def __init__(self, unknown: list[tuple[int, str]], total: int, message_index: int,
                 field: str) -> None:
        super().__init__(unknown, total)
        self.message_index, self.field = message_index, field
        self.param = f"messages[{message_index}].{field}"
        self.found = self.summary  # which characters, where in the field
        self.summary = f"{self.param}: {self.found}"
        self.args = (f"{self.summary} (pass on_unknown='skip' or 'replace')",)


@dataclass(frozen=True)
class ChatPrompt:
    """A rendered conversation: the text to continue, the strings that end the reply (the
    template's turn boundary) and who speaks it."""

    text: str
    stop: tuple[str, ...]
    speaker: str


@dataclass(frozen=True)
class ChatTemplate:
    """The manifest's `chat_template`: `turn` writes one message of a speaker, `system` a
    system (or developer) message without a name, `reply` opens the model's turn, `stop`
    ends it; `speakers` names the speaker of each role when a message has no `name`."""

    turn: str
    system: str
    reply: str
    stop: tuple[str, ...]
    speakers: Mapping[str, str]

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ChatTemplate:
        """From the manifest's JSON (schema-checked already); the placeholders are checked
        here: what JSON Schema cannot say."""
        template = cls(raw["turn"], raw["system"], raw["reply"], tuple(raw["stop"]),
                       dict(raw["speakers"]))
        for name, text, allowed in (("turn", template.turn, {"speaker": 1, "text": 1}),
                                    ("system", template.system, {"text": 1}),
                                    ("reply", template.reply, {"speaker": 1})):
            found = PLACEHOLDER.findall(text)
            for placeholder in ("speaker", "text"):
                count, most = found.count(placeholder), allowed.get(placeholder, 0)
                if count > most or (placeholder == "text" and count < most):
                    need = "exactly once" if placeholder == "text" and most else (
                        "at most once" if most else "not at all")
                    raise ArtifactError(f"chat_template.{name} must hold {{{placeholder}}} "
                                        f"{need} (it holds it {count} times)")
        if any("\n" in s or "\r" in s for s in template.speakers.values()):
            raise ArtifactError("chat_template.speakers must be one line each")
        return template

    def to_json(self) -> dict[str, Any]:
        return {"turn": self.turn, "system": self.system, "reply": self.reply,
                "stop": list(self.stop), "speakers": dict(self.speakers)}

    def fixed_characters(self) -> set[str]:
        """Every character the template itself writes (besides the messages' text)."""
        fixed = "".join(PLACEHOLDER.sub("", t) for t in (self.turn, self.system, self.reply))
        return set(fixed + "".join(self.stop) + "".join(self.speakers.values()))

    def missing_characters(self, vocab: Vocabulary) -> list[str]:
        """The template's characters that `vocab` lacks: with any, it cannot be used."""
        return sorted(ch for ch in self.fixed_characters() if ch not in vocab)

    def render(self, messages: Sequence[Mapping[str, Any]]) -> ChatPrompt:
        """The conversation as text, then the reply's opening. The reply's speaker is the
        `name` of the last assistant message that has one, else the assistant's default."""
        parts: list[str] = []
        speaker = self.speakers["assistant"]
        for message in checked_messages(messages):
            role, text, name = message["role"], message["content"], message.get("name")
            if role in SYSTEM_ROLES and name is None:
                parts.append(fill(self.system, text=text))
                continue
            who = name if name is not None else self.speakers[role]  # user or assistant
            parts.append(fill(self.turn, speaker=who, text=text))
            if role == "assistant" and name is not None:
                speaker = name
        parts.append(fill(self.reply, speaker=speaker))
        return ChatPrompt("".join(parts), self.stop, speaker)


DEFAULT_CHAT_TEMPLATE = ChatTemplate(
    turn="{speaker}:\n{text}\n\n", system="{text}\n\n", reply="{speaker}:\n", stop=("\n\n",),
    speakers={"user": "ROMEO", "assistant": "JULIET"})


def fill(template: str, **values: str) -> str:
    """The placeholders of `template` replaced in one pass (the values are not re-read)."""
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def checked_messages(messages: object) -> list[Mapping[str, Any]]:
    """OpenAI-style messages ({"role", "content", optional "name"}), checked: a known role,
    string content, a name of one line up to MAX_SPEAKER_CHARS characters."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise InvalidArgumentError("messages must be a non-empty list of messages",
                                   param="messages")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, Mapping):
            raise InvalidArgumentError(f"{where} must be a mapping with role and content",
                                       param="messages")
        extra = set(message) - {"role", "content", "name"}
        if extra:
            raise InvalidArgumentError(f"{where} has unknown keys {sorted(map(str, extra))}",
                                       param="messages")
        if message.get("role") not in ROLES:
            raise InvalidArgumentError(f"{where}.role must be one of {', '.join(ROLES)}, got "
                                       f"{message.get('role')!r}", param="messages")
        if not isinstance(message.get("content"), str):
            raise InvalidArgumentError(f"{where}.content must be a string", param="messages")
        name = message.get("name")
        if name is not None and (not isinstance(name, str) or not name
                                 or len(name) > MAX_SPEAKER_CHARS
                                 or "\n" in name or "\r" in name):
            raise InvalidArgumentError(f"{where}.name must be one line of 1 to "
                                       f"{MAX_SPEAKER_CHARS} characters", param="messages")
    return list(messages)


def readable_messages(messages: Sequence[Mapping[str, Any]], vocab: Vocabulary,
                      on_unknown: OnUnknown, replacement: str | None
                      ) -> list[dict[str, Any]]:
    """The messages with every content and name in the vocabulary: characters outside it
    raise (naming the message, the field and the positions), are skipped or replaced."""
    result: list[dict[str, Any]] = []
    for index, message in enumerate(checked_messages(messages)):
        clean = dict(message)
        for field in ("content", "name"):
            text = clean.get(field)
            if text is None:
                continue
            unknown = np.flatnonzero(vocab.lookup(code_points(text)) < 0)
            if unknown.size and on_unknown == "error":
                raise UnknownChatCharacterError([(int(p), text[p]) for p in unknown[:10]],
                                                int(unknown.size), index, field)
            if unknown.size:
                clean[field] = vocab.decode(vocab.encode(text, on_unknown, replacement))
        if clean.get("name") == "":
            raise InvalidArgumentError(f"messages[{index}].name has no character left in the "
                                       "vocabulary", param="messages")
        result.append(clean)
    return result


def chat_prompt(template: ChatTemplate, vocab: Vocabulary,
                messages: Sequence[Mapping[str, Any]], on_unknown: OnUnknown = "error",
                replacement: str | None = None) -> ChatPrompt:
    """`messages` through `template` for a model of vocabulary `vocab`."""
    vocab.encode("", on_unknown, replacement)  # checks on_unknown and the replacement
    missing = template.missing_characters(vocab)
    if missing:
        raise ArtifactError(f"this model cannot chat: its chat template writes characters its "
                            f"vocabulary lacks ({', '.join(map(repr, missing))}); export it "
                            "with a chat template of its own characters (--chat-template)")
    return template.render(readable_messages(messages, vocab, on_unknown, replacement))


def template_of(raw_manifest: Mapping[str, Any]) -> ChatTemplate:
    """The manifest's template, or the default for an artifact that carries none."""
    raw = raw_manifest.get("chat_template")
    return DEFAULT_CHAT_TEMPLATE if raw is None else ChatTemplate.from_json(raw)
