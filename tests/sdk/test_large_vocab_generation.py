"""Generation from a model with thousands of characters, end to end: the sampler's
large-vocabulary paths (onnxruntime's softmax into reused buffers, the inverse CDF by blocks,
threshold candidates) inside the decode loop, where batches shrink as rows finish and the
uniforms of many steps are made at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bard_sdk
import numpy as np
import pytest
from bard_sdk.sampling import SamplingParams, row_keys, sample, uniforms

from tests.conftest import TINY

VOCAB = 1500  # above the sampler's LARGE_VOCAB, small enough to train in seconds


@pytest.fixture(scope="module")
def large_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from bard.bench.large_vocab import synthetic_text
    from bard.export.export import ExportRequest, export_run
    from bard.training.train import RunRequest, train

    work = tmp_path_factory.mktemp("large-vocab")
    corpus = work / "corpus.txt"
    corpus.write_text(synthetic_text(VOCAB, 30_000, seed=5), encoding="utf-8")
    train(RunRequest(out=work / "run", data=corpus, preset="tiny", device="cpu",
                     show_progress=False,
                     overrides={**TINY, "max_steps": 30, "eval_interval": 30}))
    export_run(ExportRequest(run_dir=work / "run", out=work / "artifact"))
    loaded = bard_sdk.load(Path(work / "artifact"), device="cpu")
    assert len(loaded.vocab) == VOCAB
    return loaded


def reference_ids(model: Any, prompt: str, steps: int, params: SamplingParams,
                  seed: int) -> list[int]:
    """The definition, one row, one step at a time: the prompt fed, then each id drawn by
    `sample` with that step's own uniform and fed back."""
    key = row_keys([seed])
    h, c = model.zero_state(1)
    logits, h, c = model.forward(model.encode(prompt)[None, :], h, c)
    drawn: list[int] = []
    for step in range(steps):
        u = uniforms(key, np.array([step]))
        next_id = sample(logits[:, -1], params, u)
        drawn.append(int(next_id[0]))
        logits, h, c = model.forward(next_id[:, None], h, c)
    return drawn


CASES = [SamplingParams(0.8), SamplingParams(1.0, top_p=0.9), SamplingParams(0.9, top_k=40),
         SamplingParams(1.2, top_k=300, top_p=0.7)]


@pytest.mark.parametrize("params", CASES, ids=str)
def test_batched_rows_of_different_lengths_draw_as_the_definition_does(
        large_model: Any, params: SamplingParams) -> None:
    """Five rows, each ending at its own length (so the batch shrinks step by step), run
    past several tables of uniforms made ahead: each row's text is the one-row,
    step-by-step definition's."""
    prompts = [large_model.vocab.chars[i] for i in (0, 3, 10, 200, 1499)]
    seeds = [11, 12, 13, 14, 15]
    lengths = [70, 33, 90, 1, 64]
    texts = [large_model.generate(p, n, temperature=params.temperature, top_k=params.top_k,
                                  top_p=params.top_p, seed=s)
             for p, n, s in zip(prompts, lengths, seeds, strict=True)]
    batch = large_model.generate(prompts, max(lengths), temperature=params.temperature,
                                 top_k=params.top_k, top_p=params.top_p, seed=seeds)
    for prompt, n, seed, alone, together in zip(prompts, lengths, seeds, texts, batch,
                                                 strict=True):
        expected = "".join(large_model.vocab.chars[i]
                           for i in reference_ids(large_model, prompt, n, params, seed))
        assert alone == expected
        assert together[:n] == expected


def test_an_engine_row_draws_the_same_beside_rows_that_come_and_go(large_model: Any) -> None:
    """Rows join and leave an engine between steps (the sampler's buffers change size):
    each row's text is still its own."""
    prompts = [large_model.vocab.chars[i] for i in range(0, 1500, 150)]
    lengths = [5 + 7 * i for i in range(len(prompts))]
    alone = [large_model.generate(p, n, temperature=0.9, top_p=0.95, seed=i)
             for i, (p, n) in enumerate(zip(prompts, lengths, strict=True))]
    with bard_sdk.Engine(large_model, max_active=4) as engine:
        handles = [engine.submit(p, n, temperature=0.9, top_p=0.95, seed=i)
                   for i, (p, n) in enumerate(zip(prompts, lengths, strict=True))]
        assert [h.result().text for h in handles] == alone
