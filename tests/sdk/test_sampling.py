"""Sampling: the float32, candidates-only paths draw exactly the distribution of the plain
float64 definition (full sort, full cumulative sum), for small and large vocabularies."""

from __future__ import annotations

import numpy as np
import pytest
from bard_sdk import large_vocab, weights_graph
from bard_sdk.sampling import SamplingParams, sample


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


def test_the_weights_graph_is_valid_onnx_and_exact_elementwise() -> None:
    """The ModelProto written by hand (the SDK has no `onnx` dependency) is what
    onnx.helper would build, passes the full checker, and computes the float32 weights."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    model = onnx.load_from_string(weights_graph.weights_model())
    onnx.checker.check_model(model, full_check=True)
    nodes = [helper.make_node("ReduceMax", ["z"], ["top"], axes=[1], keepdims=1),
             helper.make_node("Sub", ["z", "top"], ["d"]),
             helper.make_node("Mul", ["d", "scale"], ["e"]),
             helper.make_node("Exp", ["e"], ["w"])]
    graph = helper.make_graph(
        nodes, "bard_sampling_weights",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["rows", "vocab"]),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("w", TensorProto.FLOAT, ["rows", "vocab"])])
    assert model.graph == graph
    assert [(o.domain, o.version) for o in model.opset_import] == [("", weights_graph.OPSET)]
    logits = np.stack([peaked_logits(3001, seed) for seed in range(5)])
    weights = weights_graph.exp_weights(logits, np.float32(1 / 0.7))
    z = logits.astype(np.float64)
    expected = np.exp((z - z.max(axis=1, keepdims=True)) / 0.7)
    assert weights.dtype == np.float32 and weights.shape == logits.shape
    assert (weights[~np.isfinite(logits)] == 0).all() and (weights.max(axis=1) == 1).all()
    assert np.allclose(weights, expected, rtol=1e-5, atol=1e-30)


def test_an_empty_batch_samples_nothing() -> None:
    for vocab in (65, 3000):
        assert sample(np.zeros((0, vocab), np.float32), SamplingParams(0.8, top_p=0.9),
                      np.zeros(0)).shape == (0,)
