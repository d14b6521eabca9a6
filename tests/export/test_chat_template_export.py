"""`bard export --chat-template FILE`: the template lands in the manifest and drives chat;
a bad file is refused before the export work, in one line."""

from __future__ import annotations

import json
from pathlib import Path

import bard_sdk
import pytest
from bard.export.chat_template import chat_template_for
from bard.export.export import ExportRequest, export_run
from bard.training.errors import UsageError
from bard_sdk import DEFAULT_CHAT_TEMPLATE
from bard_sdk.vocab import Vocabulary

from tests.conftest import bard_cli

CUSTOM = {"turn": "{speaker}. {text}\n", "system": "{text}\n", "reply": "{speaker}.",
          "stop": ["\n", "!"], "speakers": {"user": "Q", "assistant": "A"}}


def test_export_writes_the_template_it_is_given(tiny_run: Path, tmp_path: Path) -> None:
    source = tmp_path / "template.json"
    source.write_text(json.dumps(CUSTOM))
    out = tmp_path / "art"
    bard_cli("export", str(tiny_run), "--out", str(out), "--chat-template", str(source),
             check=True)
    assert json.loads((out / "manifest.json").read_text())["chat_template"] == CUSTOM
    model = bard_sdk.load(out, device="cpu")
    prompt = model.chat_prompt([{"role": "user", "content": "Who goes there?"}])
    assert (prompt.text, prompt.stop) == ("Q. Who goes there?\nA.", ("\n", "!"))


@pytest.mark.parametrize(("content", "expected"), [
    ("{not json", "is not valid JSON"),
    (json.dumps({**CUSTOM, "jinja": "{{ messages }}"}), "unexpected key 'jinja'"),
    (json.dumps({**CUSTOM, "turn": "{speaker}"}), "{text} exactly once"),
    (json.dumps({**CUSTOM, "reply": "{speaker}~"}), "lacks: '~'"),
])
def test_a_bad_template_file_is_one_line_and_writes_nothing(
        tiny_run: Path, tmp_path: Path, content: str, expected: str) -> None:
    source = tmp_path / "template.json"
    source.write_text(content)
    out = tmp_path / "art"
    result = bard_cli("export", str(tiny_run), "--out", str(out), "--chat-template", str(source))
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists()


def test_a_missing_template_file_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--chat-template file not found"):
        export_run(ExportRequest(run_dir=tiny_run, out=tmp_path / "art",
                                 chat_template=tmp_path / "absent.json"))


def test_the_default_is_left_out_when_the_vocabulary_cannot_write_it() -> None:
    notes: list[str] = []
    lowercase = Vocabulary("abcdefghijklmnopqrstuvwxyz \n")
    assert chat_template_for(None, lowercase, notes.append) is None
    assert "':'" in notes[0] and "--chat-template" in notes[0]
    shakespeare = Vocabulary(bard_sdk.load(device="cpu").vocab.chars)
    assert chat_template_for(None, shakespeare, notes.append) == DEFAULT_CHAT_TEMPLATE
    assert len(notes) == 1
