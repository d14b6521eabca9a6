"""The tokenizer routes in vLLM's shape (`POST /tokenize`, `POST /detokenize`,
`GET /tokenizer_info`), and token-id prompts: a character is a token, its id its index in the
artifact's vocabulary.

bard's models have no special tokens. The newline plays both the begin and the end token's
part (as GPT-2's `<|endoftext|>` does both): it is the prime character an empty prompt is read
as (the SDK's contract: a text starts where a speech starts, after a line break), and where a
speech ends in the training text. `/tokenizer_info` reports it as `bos_token` and `eos_token`
(null for a vocabulary without a newline), which is what lm-evaluation-harness conditions a
document's first character on. `add_special_tokens` (vLLM's default true) gives the ids the
model reads for the text as a completion prompt: its characters, or the prime character alone
for an empty one; false gives the characters only.
"""

from __future__ import annotations

from typing import Any

from bard_sdk import UnknownCharacterError
from bard_sdk.contract import PRIME_CHARACTER
from bard_sdk.vocab import Vocabulary
from pydantic import BaseModel, ConfigDict

from .openai_api import ApiError

# Out-of-range ids named in an error, at most
SHOWN_IDS = 10


class TokenizeRequest(BaseModel):
    """POST /tokenize (vLLM's completion form)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool = False


class DetokenizeRequest(BaseModel):
    """POST /detokenize."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: str | None = None
    tokens: list[int]


def checked_model(name: str | None, model_id: str) -> None:
    if name is not None and name != model_id:
        raise ApiError(404, f"model {name!r} not found; this server serves {model_id!r}",
                       param="model", code="model_not_found")


def encoded(vocab: Vocabulary, text: str, param: str) -> list[int]:
    """The ids of `text`, or a 400 naming the characters the vocabulary lacks."""
    try:
        return vocab.encode(text).tolist()
    except UnknownCharacterError as err:
        raise ApiError(400, f"{param}: {err.summary}", param=param) from None


def decoded(vocab: Vocabulary, ids: list[int], param: str) -> str:
    """The text of vocabulary ids, or a 400 naming the ids that are not in it."""
    size = len(vocab)
    bad = [(k, i) for k, i in enumerate(ids) if not 0 <= i < size]
    if bad:
        shown = ", ".join(f"{i} at {k}" for k, i in bad[:SHOWN_IDS])
        more = f" and {len(bad) - SHOWN_IDS} more" if len(bad) > SHOWN_IDS else ""
        raise ApiError(400, f"{param}: {len(bad)} token id(s) not in the vocabulary (ids are "
                            f"0 to {size - 1}): {shown}{more}", param=param)
    return vocab.decode(ids)


def tokenize(body: TokenizeRequest, vocab: Vocabulary, model_id: str,
             max_model_len: int) -> dict[str, Any]:
    checked_model(body.model, model_id)
    ids = encoded(vocab, body.prompt, "prompt")
    if not ids and body.add_special_tokens and PRIME_CHARACTER in vocab:
        ids = [vocab.index[PRIME_CHARACTER]]
    strs = [vocab.chars[i] for i in ids] if body.return_token_strs else None
    return {"count": len(ids), "max_model_len": max_model_len, "tokens": ids,
            "token_strs": strs}


def detokenize(body: DetokenizeRequest, vocab: Vocabulary, model_id: str) -> dict[str, Any]:
    checked_model(body.model, model_id)
    return {"prompt": decoded(vocab, body.tokens, "tokens")}


def tokenizer_info(vocab: Vocabulary, max_model_len: int) -> dict[str, Any]:
    """What vLLM's route reports of a Hugging Face tokenizer, for a character vocabulary."""
    boundary = PRIME_CHARACTER if PRIME_CHARACTER in vocab else None
    return {"tokenizer_class": "bard_sdk.Vocabulary", "vocab_size": len(vocab),
            "bos_token": boundary, "eos_token": boundary, "pad_token": None,
            "unk_token": None, "add_bos_token": False, "model_max_length": max_model_len,
            "chat_template": None}
