"""examples/translation.py: the language pair, BLEU, the dropout targets, and smoke runs."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sacrebleu")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

import translation as tr  # noqa: E402

import genepool as gp  # noqa: E402
from genepool.integrations import torch as gpt  # noqa: E402
from tests._golden import check_golden  # noqa: E402


@pytest.fixture(scope="module")
def data() -> tr.Corpus:
    return tr.corpus(tr.SIZES["smoke"]["train_sentences"])


# -- the task ------------------------------------------------------------------------------
def test_bleu_of_the_references_against_themselves_is_100(data: tr.Corpus) -> None:
    assert tr.bleu(data.heldout_refs, data.heldout_refs) == pytest.approx(100.0)
    assert tr.bleu(["a b c d e"], ["a b c d e"]) == pytest.approx(100.0)
    assert tr.bleu(["x y z w v"], ["a b c d e"]) == 0.0


def test_the_task_needs_reordering_and_agreement(data: tr.Corpus) -> None:
    lex = tr.make_lexicon()
    clauses = [tr.parse_source(s.split()) for s in data.heldout_sources]
    assert [" ".join(tr.target_words(c, lex)) for c in clauses] == data.heldout_refs

    def score(**how: bool) -> float:
        hyps = [" ".join(tr.target_words(c, lex, **how)) for c in clauses]
        return tr.bleu(hyps, data.heldout_refs)

    word_by_word = [" ".join(tr.word_by_word(s.split(), lex)) for s in data.heldout_sources]
    assert tr.bleu(word_by_word, data.heldout_refs) < 10
    assert score(reorder=False, agree=True) < 20  # right forms, source order
    assert score(reorder=True, agree=False) < 40  # right order, default forms


def test_agreement_reaches_a_word_far_away() -> None:
    lex = tr.make_lexicon()
    src = ["the", "big", "red", "dogs", "that", "sees", "a", "cat"]
    src += ["chases", "some", "old", "horses"]
    clause = tr.parse_source(src)
    assert tr.source_words(clause) == src
    words = tr.target_words(clause, lex)
    stem, gender = lex.nouns["dog"]
    assert words[:2] == [tr.ARTICLES[(True, gender, True)], stem + "n"]
    assert words[2:4] == [
        lex.adjectives["red"] + tr.ADJ_ENDINGS[(gender, True)],
        lex.adjectives["big"] + tr.ADJ_ENDINGS[(gender, True)],
    ]
    # both verbs are plural (the subject "dogs" is plural) and clause-final
    assert words[-1] == lex.verbs["chases"] + tr.VERB_ENDINGS[True]
    assert words[4] == tr.RELATIVE_WORD
    assert words[7] == lex.verbs["sees"] + tr.VERB_ENDINGS[True]


def test_held_out_sentences_never_occur_in_training(data: tr.Corpus) -> None:
    train = {tuple(row.tolist()) for row in data.train_src}
    assert not any(tuple(row.tolist()) in train for row in data.heldout_src)
    assert len(train) == len(data.train_src)


# -- the hyperparameters are in effect ---------------------------------------------------------
def _state(layers: int = 2) -> gpt.TorchState:
    model = tr.Translator(20, 20, d_model=16, heads=2, layers=layers, ff=32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return gpt.TorchState(
        models={"model": model}, optimizers={"opt": opt}, hparams=tr.hparam_targets()
    )


def test_every_dropout_of_the_model_is_mapped_to_exactly_one_hyperparameter() -> None:
    layers = 2
    ts = _state(layers)
    model = ts.models["model"]
    hp = {"lr": 0.002, "attention_dropout": 0.11, "layer_dropout": 0.22, "relu_dropout": 0.33}
    ts.apply(hp)
    assert ts.in_effect() == hp
    attention = [n for n, m in model.named_modules() if isinstance(m, torch.nn.MultiheadAttention)]
    # encoder self-attention, decoder self- and cross-attention
    assert len(attention) == 3 * layers
    assert all(
        m.dropout == 0.11 for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)
    )
    by_value: dict[float, list[str]] = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Dropout):
            by_value.setdefault(m.p, []).append(name)
    assert set(by_value) == {0.22, 0.33}  # no dropout left at its built value
    # residual: encoder dropout1/2, decoder dropout1/2/3, and the embeddings
    assert len(by_value[0.22]) == 5 * layers + 1
    assert "embed_dropout" in by_value[0.22]
    assert sorted(by_value[0.33]) == sorted(
        f"{part}.layers.{i}.dropout" for part in ("encoder", "decoder") for i in range(layers)
    )


def _output(ts: gpt.TorchState, hp: dict[str, float]) -> Any:
    ts.apply({"lr": 1e-3, **hp})
    model = ts.models["model"]
    model.train()
    src = torch.tensor([[3, 4, 5, 6, 2, 0], [7, 8, 9, 2, 0, 0]])
    tgt = torch.tensor([[1, 3, 4, 5], [1, 6, 7, 0]])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return model(src, tgt).detach()


@pytest.mark.parametrize("name", ["attention_dropout", "layer_dropout", "relu_dropout"])
def test_setting_each_dropout_changes_the_forward_pass(name: str) -> None:
    ts = _state()
    off = {"attention_dropout": 0.0, "layer_dropout": 0.0, "relu_dropout": 0.0}
    base = _output(ts, off)
    # with every dropout at 0, training mode computes exactly what eval mode does
    ts.models["model"].eval()
    with torch.no_grad():
        src = torch.tensor([[3, 4, 5, 6, 2, 0], [7, 8, 9, 2, 0, 0]])
        tgt = torch.tensor([[1, 3, 4, 5], [1, 6, 7, 0]])
        assert torch.allclose(ts.models["model"](src, tgt), base, atol=1e-5)
    # MultiheadAttention reads its dropout attribute at every forward: setting it counts
    changed = _output(ts, {**off, name: 0.5})
    assert not torch.allclose(changed, base)
    assert torch.equal(_output(ts, off), base)


# -- end to end ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pbt() -> gp.Result:
    return tr.run(method="pbt", seed=0, size="smoke")


def test_pbt_runs_end_to_end_exploits_and_has_a_schedule(pbt: gp.Result) -> None:
    score = pbt.best.score
    assert score is not None
    assert math.isfinite(score)
    assert 0.0 <= score <= 100.0
    assert any(e.kind == "exploit" for e in pbt.events)
    schedule = pbt.schedule()
    assert schedule.final_step == tr.SIZES["smoke"]["steps"]
    assert set(schedule.at(0)) == set(tr.SPACE)
    frame = pbt.history_frame()
    # the data position travels with the weights: every report's step is the training had
    assert (frame["batches"] == frame["step"] * tr.SIZES["smoke"]["batches"]).all()
    # and the hyperparameters that trained every step are the ones decided for it
    for name in tr.SPACE:
        assert np.allclose(frame[f"used_{name}"], frame[f"hp.{name}"])
    assert frame["hp.lr"].nunique() > tr.SIZES["smoke"]["population"]  # explore changed some


def test_a_seeded_run_is_reproducible(pbt: gp.Result) -> None:
    again = tr.run(method="pbt", seed=0, size="smoke")
    assert again.best.score == pbt.best.score
    assert [r.metrics for r in again.reports] == [r.metrics for r in pbt.reports]


def test_random_search_runs_the_same_population_without_exploits() -> None:
    result = tr.run(method="random", seed=0, size="smoke")
    score = result.best.score
    assert score is not None
    assert math.isfinite(score)
    assert 0.0 <= score <= 100.0
    assert not any(e.kind == "exploit" for e in result.events)
    assert len(result.members) == tr.SIZES["smoke"]["population"]
    assert all(m.step == tr.SIZES["smoke"]["steps"] for m in result.members)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="method"):
        tr.run(method="grid", seed=0, size="smoke")
    with pytest.raises(ValueError, match="size"):
        tr.run(method="pbt", seed=0, size="huge")


def test_the_rng_of_the_member_decides_the_batches() -> None:
    # two members with the same stream train identically; another stream differs
    def losses(seed: int) -> list[float]:
        cls = tr._trainable("smoke")
        hp = {"lr": 3e-3, "attention_dropout": 0.1, "layer_dropout": 0.1, "relu_dropout": 0.1}
        t = cls()
        t.member = gp.Member(id=0, hparams=hp, rng=np.random.default_rng(seed))
        t.setup(hp)
        return [t.step()["loss"] for _ in range(2)]

    assert losses(1) == losses(1)
    assert losses(1) != losses(2)


def test_the_seeded_run_matches_its_golden_file(pbt: gp.Result) -> None:
    """Its lineage and scores, as before issue 15 rewrote the round (tests/_golden.py)."""
    check_golden(pbt, tr.METRIC, "translation")
