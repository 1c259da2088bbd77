"""Stop strings and new-token counts: the text is cut at the first stop string, counts stop at the end token, and
evaluate() records new_tokens per example and mean_new_tokens; a tiny model's generate() really stops early."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from segloss.data import load_examples
from segloss.evaluation import EvalConfig, evaluate
from segloss.evaluation.generation import Generated, count_new_tokens, cut_at_stop, end_token_ids, make_generate_fn

ARITH = {"n_train": 4, "n_validation": 2, "n_test": 4, "max_steps": 2}


def test_cut_at_the_earliest_stop_string():
    stops = ("\nQuestion:", "\n\n")
    assert cut_at_stop("<<1+2=3>> #### 3\n\nQuestion: next", stops) == "<<1+2=3>> #### 3"
    assert cut_at_stop("#### 3\nQuestion: a\n\n", stops) == "#### 3"
    assert cut_at_stop("#### 3", stops) == "#### 3"
    assert cut_at_stop("A\nB", ()) == "A\nB"


def test_count_new_tokens_stops_at_the_end_token_and_ignores_padding():
    new = torch.tensor([[5, 6, 2, 2, 2], [5, 6, 7, 8, 9], [5, 0, 0, 0, 0]])  # 2 = EOS, 0 = pad
    assert count_new_tokens(new, [2], pad_id=0) == [3, 5, 1]


def test_end_tokens_include_the_chat_end_of_turn(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert end_token_ids(tokenizer) == [tokenizer.eos_token_id]
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_end|>"]})
    assert end_token_ids(tokenizer) == [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_evaluate_cuts_at_stop_strings_and_records_new_tokens(tmp_path):
    examples = load_examples("arith", "test", **ARITH)
    answers = {ex.prompt.rstrip(" "): ex.answer for ex in examples}

    def generate(prompts, _):  # a model that runs on into the next question
        return [Generated(" " + answers[p] + "\n\nQuestion: what next?", 7) for p in prompts]

    config = EvalConfig(model="unused", dataset="arith", dataset_options=ARITH, output_dir=str(tmp_path))
    result = evaluate(config, generate_fn=generate)
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [r["generated"] for r in rows] == [" " + ex.answer for ex in examples]
    assert result["metrics"]["exact_match"]["mean"] == 1.0
    assert [r["new_tokens"] for r in rows] == [7] * 4 and result["mean_new_tokens"] == 7
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["stop_strings"] == ["\nQuestion:", "\n\n"] and saved["mean_new_tokens"] == 7

    off = EvalConfig(
        model="unused", dataset="arith", dataset_options=ARITH, output_dir=str(tmp_path), stop_strings=False
    )
    assert evaluate(off, generate_fn=generate)["stop_strings"] == []
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert all(r["generated"].endswith("\n\nQuestion: what next?") for r in rows)  # nothing cut


@pytest.mark.parametrize("stops", [(), ("Z",)])
def test_tiny_model_generation_stops_at_a_stop_string(tiny_model_dir, stops):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    free = make_generate_fn(model, tokenizer)(["Question: a\nAnswer:"], 12)[0]
    if not stops:
        assert free.new_tokens == 12  # a random model never says EOS in 12 tokens (seeded, deterministic)
        return
    stop = free.text.strip()[3]  # a character the greedy continuation is known to produce
    out = make_generate_fn(model, tokenizer, stop_strings=(stop,))(["Question: a\nAnswer:"], 12)[0]
    assert stop not in out.text and out.new_tokens < 12 and free.text.startswith(out.text)


def test_shared_prefix_length_leaves_every_row_a_token_of_its_own():
    from segloss.evaluation.generation import shared_prefix_length

    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3, 4, 6]]) == 3
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # identical rows keep their last token
    assert shared_prefix_length([[1, 2, 3]]) == 2 and shared_prefix_length([[7], [7, 8]]) == 0
    assert shared_prefix_length([[1, 2], [3, 2]]) == 0


def test_reusing_the_shared_prefix_gives_the_same_generations_and_runs_it_once(tiny_model_dir, one_torch_thread):
    """Few-shot prompts (a long shared beginning) in batches of 3, 1 and 1: the same tokens as generating from the
    whole prompts, with the shared beginning run through the model once, and once more when a prompt shares less."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    shots = "".join(
        f"Question: {a} plus {a + 1}?\nAnswer: <<{a}+{a + 1}={2 * a + 1}>> #### {2 * a + 1}\n\n" for a in range(5)
    )
    prompts = [
        f"{shots}Question: {q}?\nAnswer:" for q in ("7 minus 2", "9 times 3", "10 over 5", "1 plus 1", "the sum")
    ]
    plain = make_generate_fn(model, tokenizer, reuse_prefix=False)
    reused = make_generate_fn(model, tokenizer)
    forwards = []
    model.register_forward_hook(
        lambda _m, args, kwargs, _out: forwards.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    expected = [g for batch in (prompts[:3], prompts[3:4], prompts[4:]) for g in plain(batch, 10)]
    forwards.clear()
    got = [g for batch in (prompts[:3], prompts[3:4], prompts[4:]) for g in reused(batch, 10)]
    assert got == expected and all(g.new_tokens == 10 for g in got)
    n_shared = len(tokenizer(shots + "Question:").input_ids)
    long_inputs = [shape for shape in forwards if shape[1] >= n_shared]
    # The first batch shares "Question: " (its space a token of its own); the 4th prompt reuses that; the 5th's space
    # belongs to its word " the", so the prefix is computed once more without it, and would be reused from then on.
    assert long_inputs == [(1, n_shared + 1), (1, n_shared)], forwards


class ScriptedLM:
    """A stand-in for a causal LM whose greedy continuation is known: row r writes the token ``x`` until it has
    written ``3 + its prompt length % 7`` of them, then EOS. It continues rows that already hold some ``x`` (as the
    rounds of make_generate_fn feed them back) and records each call's batch size."""

    def __init__(self, tokenizer) -> None:
        self.x, self.eos = tokenizer.convert_tokens_to_ids("x"), tokenizer.eos_token_id
        self.device = torch.device("cpu")
        self.batches: list[int] = []

    def forward(self, input_ids=None, attention_mask=None):  # only its signature is read
        raise AssertionError("not called without prefix reuse")

    def generate(self, input_ids, attention_mask, max_new_tokens, pad_token_id, **kwargs):
        self.batches.append(input_ids.shape[0])
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            real = [t for t, m in zip(ids, mask, strict=True) if m]
            prompt = list(itertools.takewhile(lambda t: t != self.x, real))
            target, written = 3 + len(prompt) % 7, len(real) - len(prompt)
            new = [self.x] * max(0, target - written) + [self.eos]
            rows.append((new + [pad_token_id] * max_new_tokens)[:max_new_tokens])
        return torch.cat([input_ids, torch.tensor(rows)], dim=1)


def test_rounds_let_finished_rows_leave_the_batch_and_change_no_generation(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = ["Question: a\nAnswer:", "Question: 7 plus 5?\nAnswer:", "Problem: a train, 120 km?\nAnswer:"]
    one_round = ScriptedLM(tokenizer)
    expected = make_generate_fn(one_round, tokenizer, reuse_prefix=False)(prompts, 20)
    assert one_round.batches == [3] and len({g.new_tokens for g in expected}) == 3  # three different lengths
    assert all(g.text == "x" * (g.new_tokens - 1) for g in expected)  # EOS counted, not shown
    rounds = ScriptedLM(tokenizer)
    got = make_generate_fn(rounds, tokenizer, reuse_prefix=False, round_tokens=2)(prompts, 20)
    assert got == expected
    assert (
        rounds.batches[0] == 3 and rounds.batches[-1] == 1 and rounds.batches == sorted(rounds.batches, reverse=True)
    )
    capped = make_generate_fn(ScriptedLM(tokenizer), tokenizer, reuse_prefix=False, round_tokens=2)(prompts, 3)
    assert [g.new_tokens for g in capped] == [3, 3, 3]  # the budget holds across rounds


def test_the_callers_tokenizer_is_not_modified_and_padding_is_eos(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tokenizer.pad_token is None  # Llama-style: no pad token
    side, pads = tokenizer.padding_side, []
    model = ScriptedLM(tokenizer)
    scripted = model.generate

    def generate(input_ids, attention_mask, max_new_tokens, pad_token_id, **kwargs):
        pads.append(pad_token_id)
        return scripted(input_ids, attention_mask, max_new_tokens, pad_token_id, **kwargs)

    model.generate = generate
    out = make_generate_fn(model, tokenizer, reuse_prefix=False)(["Question: a\nAnswer:", "Question: bb\nAnswer:"], 12)
    assert [g.text for g in out] == ["x" * (g.new_tokens - 1) for g in out] and out[0].new_tokens != out[1].new_tokens
    assert pads == [tokenizer.eos_token_id]  # segloss.data.pad_token_id: EOS when there is no pad token
    assert tokenizer.pad_token is None and tokenizer.padding_side == side
