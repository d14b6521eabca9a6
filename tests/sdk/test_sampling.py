"""Sampling: the float32, candidates-only paths draw exactly the distribution of the plain
float64 definition (full sort, full cumulative sum), for small and large vocabularies."""

from __future__ import annotations

import numpy as np
import pytest
from bard_sdk import large_vocab, softmax_graph
from bard_sdk.sampling import SamplingParams, row_keys, sample, uniform_table, uniforms


def reference_probabilities(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """The definition, in float64 over the whole vocabulary (the sampler before issue 27)."""
    z = logits.astype(np.float64) / params.temperature
    if params.top_k is not None and params.top_k < z.shape[0]:
        kth = np.sort(z)[-params.top_k]
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max())
    if params.top_p is not None and params.top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        before = np.cumsum(p[order]) - p[order]
        p[order[before > params.top_p * p.sum()]] = 0.0
    return p / p.sum()


def peaked_logits(vocab: int, seed: int) -> np.ndarray:
    """A few likely characters over a long flat tail, as a trained model's next-character
    scores look; some characters banned (-inf)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.0, vocab).astype(np.float32)
    logits[rng.choice(vocab, 12, replace=False)] += rng.uniform(3.0, 8.0, 12).astype(np.float32)
    logits[rng.choice(vocab, 3, replace=False)] = -np.inf
    return logits


CASES = [SamplingParams(1.0), SamplingParams(0.7), SamplingParams(1.3, top_k=50),
         SamplingParams(0.8, top_p=0.9), SamplingParams(1.0, top_p=0.5),
         SamplingParams(0.9, top_k=200, top_p=0.8), SamplingParams(2.0, top_k=7),
         SamplingParams(5.0, top_p=0.95)]  # flat: the nucleus is most of the vocabulary


@pytest.mark.parametrize(("vocab", "n"), [(65, 4000), (3000, 2000), (20_000, 500)])
@pytest.mark.parametrize("params", CASES, ids=str)
def test_every_path_draws_the_defined_distribution(vocab: int, n: int,
                                                   params: SamplingParams) -> None:
    """Stratified uniforms (i + 0.5) / n turn frequencies into the inverse CDF itself: each
    character is drawn p x n times, to within one draw and float32 rounding."""
    logits = peaked_logits(vocab, seed=vocab)
    fractions = (np.arange(n) + 0.5) / n
    drawn = sample(np.repeat(logits[None], n, axis=0), params, fractions)
    frequencies = np.bincount(drawn, minlength=vocab) / n
    expected = reference_probabilities(logits, params)
    assert np.abs(frequencies - expected).max() <= 1.5 / n + 1e-4
    assert (frequencies[expected == 0] == 0).all(), "never a character of probability 0"


@pytest.mark.parametrize("vocab", [65, 6005])
@pytest.mark.parametrize("params", CASES[:6], ids=str)
def test_a_row_draws_the_same_alone_or_in_any_batch(vocab: int, params: SamplingParams) -> None:
    rows = np.stack([peaked_logits(vocab, seed) for seed in range(16)])
    u = np.random.default_rng(1).random(16)
    together = sample(rows, params, u)
    alone = [int(sample(rows[i : i + 1], params, u[i : i + 1])[0]) for i in range(16)]
    assert together.tolist() == alone
    assert sample(rows[::-1].copy(), params, u[::-1]).tolist() == alone[::-1]


def test_a_uniform_just_below_one_never_reaches_a_banned_character() -> None:
    logits = np.zeros((4, 3000), dtype=np.float32)
    logits[:, -5:] = -np.inf  # the last columns, where an overshoot would land
    u = np.full(4, np.nextafter(1.0, 0.0))
    for params in CASES[:4]:
        assert (sample(logits, params, u) < 2995).all()


def misleading_rows(vocab: int) -> np.ndarray:
    """Rows whose strided sample misleads the candidate threshold, so that the safe fallbacks
    run: (0) the sampled columns high and the rest low but many (the sample's nucleus and its
    k-th value hold too little of the row), (1) the largest logits all off the sample's
    columns, (2) a flat row with a few banned characters, (3) many ties at the top."""
    stride = max(1, vocab // large_vocab.SAMPLE_SIZE)
    rows = np.zeros((4, vocab), dtype=np.float32)
    rows[0, ::stride] = 2.0
    rows[1] = np.random.default_rng(vocab).normal(0.0, 0.5, vocab)
    rows[1, 1::stride][:40] += 6.0
    rows[2, :7] = -np.inf
    rows[3, 100:400] = 3.0
    return rows


ADVERSARIAL = [SamplingParams(1.0, top_k=50), SamplingParams(0.8, top_p=0.9),
               SamplingParams(1.0, top_p=0.3), SamplingParams(1.0, top_k=120, top_p=0.5),
               SamplingParams(1.0, top_k=300), SamplingParams(0.7)]


@pytest.mark.parametrize("params", ADVERSARIAL, ids=str)
def test_misleading_rows_still_draw_the_defined_distribution(params: SamplingParams) -> None:
    vocab, n = 3000, 1000
    fractions = (np.arange(n) + 0.5) / n
    for logits in misleading_rows(vocab):
        drawn = sample(np.repeat(logits[None], n, axis=0), params, fractions)
        frequencies = np.bincount(drawn, minlength=vocab) / n
        expected = reference_probabilities(logits, params)
        assert np.abs(frequencies - expected).max() <= 1.5 / n + 1e-4
        assert (frequencies[expected == 0] == 0).all()


@pytest.mark.parametrize("params", ADVERSARIAL + CASES[:6], ids=str)
def test_a_row_draws_the_same_beside_any_rows(params: SamplingParams) -> None:
    """Candidate sets are padded to the longest row of the batch, and misleading rows take
    more candidates: a row's draw must not depend on that (nor on its place)."""
    vocab = 6005
    rows = np.concatenate([misleading_rows(vocab),
                           np.stack([peaked_logits(vocab, seed) for seed in range(12)])])
    u = np.random.default_rng(2).random(len(rows))
    alone = [int(sample(rows[i : i + 1], params, u[i : i + 1])[0]) for i in range(len(rows))]
    assert sample(rows, params, u).tolist() == alone
    order = np.random.default_rng(3).permutation(len(rows))
    assert sample(rows[order], params, u[order]).tolist() == [alone[i] for i in order]
    assert sample(rows[4:], params, u[4:]).tolist() == alone[4:]


def test_the_softmax_graph_is_valid_onnx_and_computes_probabilities_and_block_sums() -> None:
    """The ModelProto written by hand (the SDK has no `onnx` dependency) is what onnx.helper
    would build and passes the full checker; it computes each row's softmax over the
    padded vocabulary (padding and -inf logits 0) and the row's sums by blocks, the same
    for a row alone as in any batch."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(softmax_graph.softmax_model())
    onnx.checker.check_model(model, full_check=True)
    block = large_vocab.BLOCK
    nodes = [helper.make_node("Softmax", ["y"], ["p"], axis=1),
             helper.make_node("Reshape", ["p", "block_shape"], ["blocks"]),
             helper.make_node("ReduceSum", ["blocks", "block_axis"], ["sums"], keepdims=0)]
    graph = helper.make_graph(
        nodes, "bard_sampling_softmax",
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", "padded_vocab"])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["rows", "padded_vocab"]),
         helper.make_tensor_value_info("sums", TensorProto.FLOAT, ["row_blocks"])],
        [numpy_helper.from_array(np.array([-1, block], np.int64), "block_shape"),
         numpy_helper.from_array(np.array([1], np.int64), "block_axis")])
    assert model.graph == graph
    assert [(o.domain, o.version) for o in model.opset_import] == [("", softmax_graph.OPSET)]
    for vocab in (3001, 3008):  # with and without padding
        logits = np.stack([peaked_logits(vocab, seed) for seed in range(5)])
        probabilities, sums = (a.copy() for a in
                               softmax_graph.softmax_blocks(logits, np.float32(1 / 0.7)))
        padded = -(-vocab // block) * block
        z = logits.astype(np.float64) / 0.7
        expected = np.exp(z - z.max(axis=1, keepdims=True))
        expected /= expected.sum(axis=1, keepdims=True)
        assert probabilities.dtype == np.float32 and probabilities.shape == (5, padded)
        assert (probabilities[:, vocab:] == 0).all()
        assert (probabilities[:, :vocab][~np.isfinite(logits)] == 0).all()
        assert np.allclose(probabilities[:, :vocab], expected, rtol=1e-5, atol=1e-30)
        assert sums.shape == (5, padded // block)
        assert np.allclose(sums, probabilities.reshape(5, -1, block).sum(axis=2), rtol=1e-6)
        for i in range(5):
            alone_p, alone_sums = softmax_graph.softmax_blocks(logits[i : i + 1],
                                                               np.float32(1 / 0.7))
            assert np.array_equal(alone_p[0], probabilities[i])
            assert np.array_equal(alone_sums[0], sums[i])


@pytest.mark.parametrize("vocab", [3000, 3008])
def test_the_blocked_inverse_cdf_over_unpadded_rows_is_the_inverse_cdf(vocab: int) -> None:
    """`blocked_choice` on rows whose last block is short (3000 = 46 x 64 + 56), its block
    sums computed itself: stratified uniforms land each character as often as its weight."""
    logits = peaked_logits(vocab, seed=3)
    logits[-40:] += 4.0  # weight in the short last block too
    weights = np.exp(logits - logits.max()).astype(np.float32)
    n = 3000
    fractions = (np.arange(n) + 0.5) / n
    drawn = large_vocab.blocked_choice(np.repeat(weights[None], n, axis=0), fractions)
    expected = weights.astype(np.float64) / weights.astype(np.float64).sum()
    frequencies = np.bincount(drawn, minlength=vocab) / n
    assert np.abs(frequencies - expected).max() <= 1.5 / n + 1e-4
    assert (frequencies[weights == 0] == 0).all()


def test_uniforms_made_ahead_are_each_steps_own() -> None:
    """The decode loop makes the uniforms of DRAWS_AHEAD steps at once: they must be the
    numbers each (row key, step) has on its own."""
    keys = row_keys([0, 7, 2**64 - 1, None])
    steps = np.array([0, 31, 12345, 2**40])
    table = uniform_table(keys, steps, 40)
    for j in range(40):
        assert np.array_equal(table[:, j], uniforms(keys, steps + j))
    assert ((table >= 0) & (table < 1)).all()


def test_an_empty_batch_samples_nothing() -> None:
    for vocab in (65, 3000):
        assert sample(np.zeros((0, vocab), np.float32), SamplingParams(0.8, top_p=0.9),
                      np.zeros(0)).shape == (0,)
