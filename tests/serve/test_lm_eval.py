"""EleutherAI lm-evaluation-harness against a real `bard serve`, through its `local-completions`
model over HTTP with the remote tokenizer (`/tokenizer_info`, `/tokenize`, token-id prompts,
`echo` + `logprobs`): its bits per character of a held-out text equal `bard eval`'s.

lm-eval reads a document after its begin token, which for bard is the newline (serve/
tokenizer_api.py); `bard eval` reads a file from its first character and predicts the rest. So
the file holds the document after the line break it was cut at: both then score exactly the
document's characters, each given the same text before it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import bard_sdk
import pytest

from tests.conftest import SHARED_DATA, bard_cli
from tests.serve.conftest import Server

lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("tenacity", reason="lm-eval's API models need lm-eval[api]")

TASK = """\
task: bard_held_out
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: bits_per_byte
"""


def held_out_documents(model: bard_sdk.Model, count: int, chars: int) -> list[str]:
    """Pieces of the sonnets' validation tenth (never trained on), line by line, leaving out
    the lines the vocabulary cannot encode (the sonnets' numbers)."""
    text = (SHARED_DATA / "sonnets.txt").read_text()
    lines = [line + "\n" for line in text[int(len(text) * 0.9):].split("\n")[1:]
             if line.strip() and all(ch in model.vocab for ch in line)]
    docs, current = [], ""
    for line in lines:
        current += line
        if len(current) >= chars:
            docs.append(current)
            current = ""
        if len(docs) == count:
            return docs
    raise AssertionError("the held-out text is too short")


def local_completions(server: Server, **args: object):  # type: ignore[no-untyped-def]
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    return LocalCompletionsAPI(model=server.model, base_url=server.url + "/v1/completions",
                               tokenizer_backend="remote", **args)


def test_lm_eval_bits_per_character_equal_bard_eval(server: Server, model: bard_sdk.Model,
                                                    tiny_artifact: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # the task's data is a local file
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    docs = held_out_documents(model, 3, 700)
    data = tmp_path / "held_out.jsonl"
    data.write_text("".join(json.dumps({"text": doc}) + "\n" for doc in docs))
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "bard_held_out.yaml").write_text(TASK.format(data=data))
    from lm_eval.tasks import TaskManager

    # max_length past the documents: a recurrent model has no context window, and lm-eval's
    # default (2048) would cut a longer document into windows that restart from one character
    results = lm_eval.simple_evaluate(
        model=local_completions(server, max_length=100_000, num_concurrent=2),
        tasks=["bard_held_out"], task_manager=TaskManager(include_path=str(tmp_path / "task")))
    lm_bits = results["results"]["bard_held_out"]["bits_per_byte,none"]

    text_file = tmp_path / "held_out.txt"  # one file: each document after its line break
    text_file.write_text("".join("\n" + doc for doc in docs))
    scores = [model.score("\n" + doc) for doc in docs]
    bits = sum(s.total_nats for s in scores) / sum(s.characters for s in scores) / math.log(2)
    assert lm_bits == pytest.approx(bits, rel=1e-6)
    if len(docs) == 1:
        pass
    # `bard eval` of a file with a single document: the same number, through the CLI
    single = tmp_path / "one.txt"
    single.write_text("\n" + docs[0])
    cli = json.loads(bard_cli("eval", str(single), "--model", str(tiny_artifact), "--device",
                              "cpu", "--json", check=True).stdout)
    first = next(s for s in results["samples"]["bard_held_out"] if s["doc_id"] == 0)
    nats = -float(first["filtered_resps"][0])  # lm-eval's log-likelihood of the document
    assert cli["characters"] == len(docs[0]) and docs[0].isascii()
    assert nats / len(docs[0]) / math.log(2) == pytest.approx(cli["bits_per_char"], rel=1e-6)


def test_lm_eval_loglikelihood_of_a_continuation(server: Server,
                                                 model: bard_sdk.Model) -> None:
    """Multiple-choice tasks: log p(continuation | context), and whether it is greedy."""
    from lm_eval.api.instance import Instance

    lm = local_completions(server)
    pairs = [("ROMEO:\nBut soft, what light", " through yonder"), ("", "KING:")]
    got = lm.loglikelihood([Instance("loglikelihood", {}, pair, i)
                            for i, pair in enumerate(pairs)], disable_tqdm=True)
    for (context, continuation), (value, greedy) in zip(pairs, got):
        primed = context or "\n"  # an empty context is the begin token, the newline
        expected = (model.score(primed).total_nats
                    - model.score(primed + continuation).total_nats)
        assert value == pytest.approx(expected, abs=1e-4)
        assert isinstance(greedy, bool)
