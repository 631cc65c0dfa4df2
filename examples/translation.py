"""Machine translation with PBT: a small Transformer on a synthetic language pair (BLEU).

The paper's Transformer experiment (Jaderberg et al. 2017, section 4.2), at laptop size.
PBT tunes the learning rate (log scale) and the Transformer's three dropouts: attention
dropout (on the attention weights), layer dropout (on each residual branch and on the
embeddings) and ReLU dropout (inside the feed-forward block). Selection is a binary
tournament, explore is the paper's perturb (x0.8 / x1.2), or a resample with probability
0.25 (examples/_methods.py has the other methods: PB2, ablations, ...).

**The task** is generated in code from a fixed seed (nothing is downloaded). The source
language is English-like: ``DET ADJ* NOUN [that VERB DET ADJ* NOUN] VERB DET ADJ* NOUN``
(40% of subjects carry the relative clause), a noun's number marked on the noun itself
(``dog`` / ``dogs``), verbs uninflected. The target language differs in three ways that a
word-by-word lexicon translation cannot get right:

- **reordering**: adjectives follow the noun, in mirror order (``the big red dog`` ->
  ``ART DOG RED BIG``), and both clauses are verb-final (``subject [ke object verb]
  object verb``);
- **agreement**: every target noun has a gender that the source does not show; the
  article and each adjective take the noun's gender and number (the source article sits
  before the adjectives, so its translation depends on a word up to three tokens later),
  and both verbs take the number of the subject, across the relative clause;
- **substitution**: each word goes through a bilingual lexicon of made-up words.

On the held-out set a word-by-word translation scores about 1 BLEU, correct forms in the
source order about 5, and the right order with default forms about 22 (the tests check
that these stay far below 100, the score of the references themselves).

Score: corpus BLEU (``sacrebleu.corpus_bleu``, whitespace tokens) of greedy decoding on a
fixed held-out subset of sentences never seen in training.

Run: ``python examples/translation.py --method pbt --seed 0 --size full --workers 2``
prints one JSON line with the best final BLEU.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import _cli
import _methods
import numpy as np
import sacrebleu
import torch
from torch import nn

import genepool as gp
from genepool.integrations import torch as gpt

TASK = "translation"
METRIC = "bleu"
MODE: Literal["max", "min"] = "max"

BATCH = 64
DATA_SEED = 20171127  # the data set is shared by every member and every run
TRAIN_SENTENCES = 4_000
HELDOUT_SENTENCES = 1_000

#: Population, ready interval and budget per size. ``batches`` training batches make one
#: step (then the held-out BLEU is measured); members are ready every ``ready`` steps.
SIZES: dict[str, dict[str, Any]] = {
    "smoke": {
        "population": 4,
        "ready": 2,
        "steps": 4,
        "batches": 3,
        "eval_sentences": 16,
        "train_sentences": 500,
        "d_model": 16,
        "layers": 1,
    },
    "full": {
        "population": 8,
        "ready": 2,
        "steps": 20,
        "batches": 20,
        "eval_sentences": 200,
        "train_sentences": TRAIN_SENTENCES,
        "d_model": 32,
        "layers": 2,
    },
}

SPACE = gp.Space(
    lr=gp.Float(1e-4, 3e-2, log=True),
    attention_dropout=gp.Float(0.0, 0.3),
    layer_dropout=gp.Float(0.0, 0.3),
    relu_dropout=gp.Float(0.0, 0.3),
)


# -- the language pair ---------------------------------------------------------------------
PAD, BOS, EOS = 0, 1, 2
SPECIALS = ["<pad>", "<s>", "</s>"]

NOUNS = [
    "dog", "cat", "bird", "horse", "frog", "king", "queen", "child", "farmer", "doctor",
    "teacher", "wolf", "fox", "bear", "mouse", "lion", "sailor", "baker", "snake", "goat",
]  # fmt: skip
ADJECTIVES = ["big", "small", "red", "green", "old", "young", "happy", "sad", "clever", "lazy"]
VERBS = ["sees", "likes", "chases", "finds", "helps", "calls", "follows", "knows", "feeds"]

_SYLLABLES = ["ka", "lo", "mi", "ru", "te", "sa", "no", "vi", "pe", "gu", "ra", "zo", "fi", "be"]

# target article by (definite, gender, plural); adjective and verb endings by agreement
ARTICLES = {
    (True, "m", False): "il",
    (True, "f", False): "la",
    (True, "m", True): "ilos",
    (True, "f", True): "las",
    (False, "m", False): "un",
    (False, "f", False): "una",
    (False, "m", True): "unos",
    (False, "f", True): "unas",
}
ADJ_ENDINGS = {("m", False): "o", ("f", False): "a", ("m", True): "i", ("f", True): "e"}
VERB_ENDINGS = {False: "et", True: "unt"}
SOURCE_DETERMINERS = {(True, False): "the", (True, True): "the", (False, False): "a"}
SOURCE_DETERMINERS[(False, True)] = "some"
RELATIVE = 0.4  # the share of sentences whose subject has a relative clause
RELATIVE_WORD = "ke"  # the target's "that"


@dataclass(frozen=True)
class Lexicon:
    """The bilingual lexicon: target stems, noun genders."""

    nouns: dict[str, tuple[str, str]]  # source noun -> (target stem, gender)
    adjectives: dict[str, str]  # source adjective -> target stem
    verbs: dict[str, str]  # source verb -> target stem


def make_lexicon(seed: int = DATA_SEED) -> Lexicon:
    """Made-up target words (distinct two-syllable stems) and a gender for every noun."""
    rng = np.random.default_rng(seed)
    count = len(NOUNS) + len(ADJECTIVES) + len(VERBS)
    stems: list[str] = []
    while len(stems) < count:
        stem = "".join(rng.choice(_SYLLABLES, size=2))
        if stem not in stems:
            stems.append(stem)
    nouns_stems = stems[: len(NOUNS)]
    adj_stems = stems[len(NOUNS) : len(NOUNS) + len(ADJECTIVES)]
    verb_stems = stems[len(NOUNS) + len(ADJECTIVES) :]
    genders = ["m", "f"] * (len(NOUNS) // 2)
    rng.shuffle(genders)
    return Lexicon(
        nouns={n: (s, str(g)) for n, s, g in zip(NOUNS, nouns_stems, genders, strict=True)},
        adjectives=dict(zip(ADJECTIVES, adj_stems, strict=True)),
        verbs=dict(zip(VERBS, verb_stems, strict=True)),
    )


@dataclass(frozen=True)
class NounPhrase:
    noun: str
    plural: bool
    definite: bool
    adjectives: tuple[str, ...]


@dataclass(frozen=True)
class Relative:
    """A relative clause on the subject: ``that VERB OBJECT``."""

    verb: str
    obj: NounPhrase


@dataclass(frozen=True)
class Clause:
    subject: NounPhrase
    verb: str
    obj: NounPhrase
    relative: Relative | None = None


def sample_clauses(rng: np.random.Generator, n: int) -> list[Clause]:
    """``n`` random clauses: noun phrases have 0, 1 or 2 (distinct) adjectives; the subject
    has a relative clause with probability :data:`RELATIVE`."""

    def phrases() -> list[NounPhrase]:
        count = rng.choice(3, size=n, p=[0.3, 0.4, 0.3])
        noun = rng.integers(len(NOUNS), size=n)
        plural = rng.random(n) < 0.5
        definite = rng.random(n) < 0.5
        first = rng.integers(len(ADJECTIVES), size=n)
        second = (first + 1 + rng.integers(len(ADJECTIVES) - 1, size=n)) % len(ADJECTIVES)
        return [
            NounPhrase(
                noun=NOUNS[noun[i]],
                plural=bool(plural[i]),
                definite=bool(definite[i]),
                adjectives=tuple(ADJECTIVES[a] for a in (first[i], second[i])[: count[i]]),
            )
            for i in range(n)
        ]

    subjects, objects, inner = phrases(), phrases(), phrases()
    verbs = rng.integers(len(VERBS), size=(n, 2))
    has_relative = rng.random(n) < RELATIVE
    return [
        Clause(
            subjects[i],
            VERBS[verbs[i, 0]],
            objects[i],
            Relative(VERBS[verbs[i, 1]], inner[i]) if has_relative[i] else None,
        )
        for i in range(n)
    ]


def source_words(clause: Clause) -> list[str]:
    """English-like: ``DET ADJ* NOUN [that VERB NP] VERB DET ADJ* NOUN``.

    A noun shows its number (``dog`` / ``dogs``); a verb does not.
    """

    def np_words(p: NounPhrase) -> list[str]:
        noun = p.noun + ("s" if p.plural else "")
        return [SOURCE_DETERMINERS[(p.definite, p.plural)], *p.adjectives, noun]

    rel = clause.relative
    inner = [] if rel is None else ["that", rel.verb, *np_words(rel.obj)]
    return [*np_words(clause.subject), *inner, clause.verb, *np_words(clause.obj)]


def target_words(
    clause: Clause, lex: Lexicon, *, reorder: bool = True, agree: bool = True
) -> list[str]:
    """``ART NOUN ADJ*`` (adjectives mirrored); verb-final clauses; everything agrees.

    Subject [``ke`` object verb] object verb: both verbs take the subject's number.
    ``reorder=False`` keeps the source's word order and ``agree=False`` takes the default
    forms (masculine singular article and adjectives, singular verbs): the two baselines
    that show what the task asks beyond a lexicon.
    """

    def np_words(p: NounPhrase) -> list[str]:
        stem, gender = lex.nouns[p.noun]
        noun = stem + ("n" if p.plural else "")
        g, plural = (gender, p.plural) if agree else ("m", False)
        article = ARTICLES[(p.definite, g, plural)]
        adjectives = [lex.adjectives[a] + ADJ_ENDINGS[(g, plural)] for a in p.adjectives]
        if not reorder:
            return [article, *adjectives, noun]
        return [article, noun, *reversed(adjectives)]

    def verb(v: str) -> str:
        return lex.verbs[v] + VERB_ENDINGS[clause.subject.plural and agree]

    def vp(v: str, obj: NounPhrase) -> list[str]:
        return [*np_words(obj), verb(v)] if reorder else [verb(v), *np_words(obj)]

    rel = clause.relative
    inner = [] if rel is None else [RELATIVE_WORD, *vp(rel.verb, rel.obj)]
    return [*np_words(clause.subject), *inner, *vp(clause.verb, clause.obj)]


def parse_source(words: Sequence[str]) -> Clause:
    """The clause a source sentence says (the inverse of :func:`source_words`)."""

    def phrase(part: Sequence[str]) -> NounPhrase:
        det, *adjectives, noun = part
        plural = noun not in NOUNS
        return NounPhrase(
            noun=noun[:-1] if plural else noun,
            plural=plural,
            definite=det == "the",
            adjectives=tuple(adjectives),
        )

    verbs = [i for i, w in enumerate(words) if w in VERBS]
    if "that" not in words:
        (v,) = verbs
        return Clause(phrase(words[:v]), words[v], phrase(words[v + 1 :]))
    that = words.index("that")
    r, v = verbs
    return Clause(
        phrase(words[:that]),
        words[v],
        phrase(words[v + 1 :]),
        Relative(words[r], phrase(words[r + 1 : v])),
    )


def word_by_word(words: Sequence[str], lex: Lexicon) -> list[str]:
    """The lexicon baseline: every word translated in place, in its default form."""
    return target_words(parse_source(words), lex, reorder=False, agree=False)


@dataclass(frozen=True)
class Corpus:
    """Token ids of the train and held-out sets, and both vocabularies."""

    src_vocab: list[str]
    tgt_vocab: list[str]
    train_src: torch.Tensor  # (N, S) with PAD
    train_tgt: torch.Tensor  # (N, T): BOS ... EOS PAD
    heldout_src: torch.Tensor
    heldout_refs: list[str]  # the reference translations, as text
    heldout_sources: list[str]


def _vocabularies(lex: Lexicon) -> tuple[list[str], list[str]]:
    src = (
        SPECIALS
        + ["the", "a", "some", "that"]
        + ADJECTIVES
        + VERBS
        + NOUNS
        + [n + "s" for n in NOUNS]
    )
    tgt = [*SPECIALS, RELATIVE_WORD, *sorted(set(ARTICLES.values()))]
    for stem, _ in lex.nouns.values():
        tgt += [stem, stem + "n"]
    for stem in lex.adjectives.values():
        tgt += [stem + e for e in ADJ_ENDINGS.values()]
    for stem in lex.verbs.values():
        tgt += [stem + e for e in VERB_ENDINGS.values()]
    return src, tgt


def _encode(sentences: list[list[str]], vocab: list[str], *, bos: bool) -> torch.Tensor:
    index = {w: i for i, w in enumerate(vocab)}
    width = max(len(s) for s in sentences) + 1 + int(bos)
    rows = []
    for words in sentences:
        ids = ([BOS] if bos else []) + [index[w] for w in words] + [EOS]
        rows.append(ids + [PAD] * (width - len(ids)))
    return torch.tensor(rows, dtype=torch.long)


@functools.lru_cache(maxsize=2)
def corpus(train: int = TRAIN_SENTENCES, heldout: int = HELDOUT_SENTENCES) -> Corpus:
    """The shared data set, from :data:`DATA_SEED`; held-out sentences never occur in train."""
    lex = make_lexicon()
    rng = np.random.default_rng(DATA_SEED + 1)
    # distinct clauses; the held-out ones never occur in the train set
    unique: dict[Clause, None] = {}
    while len(unique) < train + heldout:
        unique.update(dict.fromkeys(sample_clauses(rng, train + heldout - len(unique) + 100)))
    clauses = list(unique)
    train_clauses, heldout_clauses = clauses[:train], clauses[train : train + heldout]
    src_vocab, tgt_vocab = _vocabularies(lex)
    return Corpus(
        src_vocab=src_vocab,
        tgt_vocab=tgt_vocab,
        train_src=_encode([source_words(c) for c in train_clauses], src_vocab, bos=False),
        train_tgt=_encode([target_words(c, lex) for c in train_clauses], tgt_vocab, bos=True),
        heldout_src=_encode([source_words(c) for c in heldout_clauses], src_vocab, bos=False),
        heldout_refs=[" ".join(target_words(c, lex)) for c in heldout_clauses],
        heldout_sources=[" ".join(source_words(c)) for c in heldout_clauses],
    )


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (0 to 100) on whitespace tokens."""
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize="none").score)


# -- the model -----------------------------------------------------------------------------
class Translator(nn.Module):
    """A pre-norm Transformer encoder-decoder with learned positions.

    Dropout modules by name: ``*.self_attn`` / ``*.multihead_attn`` (attention weights,
    ``MultiheadAttention.dropout``, read at every forward), ``*.dropout`` (after the ReLU),
    ``*.dropout1``/``2``/``3`` (residual branches) and ``embed_dropout`` (embeddings).
    """

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        *,
        d_model: int = 64,
        heads: int = 4,
        layers: int = 2,
        ff: int = 128,
        max_len: int = 32,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.src_embed = nn.Embedding(src_vocab, d_model, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(tgt_vocab, d_model, padding_idx=PAD)
        self.src_pos = nn.Embedding(max_len, d_model)
        self.tgt_pos = nn.Embedding(max_len, d_model)
        self.embed_dropout = nn.Dropout(0.0)
        enc = nn.TransformerEncoderLayer(
            d_model, heads, ff, dropout=0.0, batch_first=True, norm_first=True
        )
        dec = nn.TransformerDecoderLayer(
            d_model, heads, ff, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(
            enc, layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.decoder = nn.TransformerDecoder(dec, layers, norm=nn.LayerNorm(d_model))
        self.out = nn.Linear(d_model, tgt_vocab)

    def _embed(self, ids: torch.Tensor, embed: nn.Embedding, pos: nn.Embedding) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = embed(ids) * self.d_model**0.5 + pos(positions)[None]
        out: torch.Tensor = self.embed_dropout(x)
        return out

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pad = src == PAD
        memory = self.encoder(
            self._embed(src, self.src_embed, self.src_pos), src_key_padding_mask=pad
        )
        return memory, pad

    def decode(
        self, tgt: torch.Tensor, memory: torch.Tensor, src_pad: torch.Tensor
    ) -> torch.Tensor:
        n = tgt.shape[1]
        causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=tgt.device), diagonal=1)
        h = self.decoder(
            self._embed(tgt, self.tgt_embed, self.tgt_pos),
            memory,
            tgt_mask=causal,
            tgt_key_padding_mask=tgt == PAD,
            memory_key_padding_mask=src_pad,
        )
        logits: torch.Tensor = self.out(h)
        return logits

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        memory, pad = self.encode(src)
        return self.decode(tgt_in, memory, pad)

    @torch.no_grad()
    def greedy(self, src: torch.Tensor, max_len: int) -> torch.Tensor:
        """Greedy decoding (call in eval mode): (B, <= max_len) ids, EOS then PAD."""
        memory, pad = self.encode(src)
        ys = torch.full((src.shape[0], 1), BOS, dtype=torch.long)
        done = torch.zeros(src.shape[0], dtype=torch.bool)
        for _ in range(max_len):
            nxt = self.decode(ys, memory, pad)[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
            ys = torch.cat([ys, nxt[:, None]], dim=1)
            done |= nxt == EOS
            if bool(done.all()):
                break
        return ys[:, 1:]


def hparam_targets() -> dict[str, gpt.Target]:
    """Where each hyperparameter lives in :class:`Translator` (module names of torch 2.x)."""
    return {
        "lr": gpt.Optimizer("opt", "lr"),
        # attention weights: self- and cross-attention of every layer
        "attention_dropout": gpt.Modules("model", nn.MultiheadAttention, "dropout"),
        # residual branches (encoder dropout1/2, decoder dropout1/2/3) and the embeddings
        "layer_dropout": gpt.Modules(
            "model", nn.Dropout, "p", names=r"(layers\.\d+\.dropout[123]|embed_dropout)$"
        ),
        # inside the feed-forward block, after the ReLU
        "relu_dropout": gpt.Modules("model", nn.Dropout, "p", names=r"layers\.\d+\.dropout$"),
    }


def _decode_text(ids: torch.Tensor, vocab: list[str]) -> list[str]:
    out = []
    for row in ids.tolist():
        words = []
        for i in row:
            if i in (EOS, PAD):
                break
            words.append(vocab[i])
        out.append(" ".join(words))
    return out


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**62))


class Translate(gpt.TorchTrainable):
    """One member: builds the model from a seed of its own stream, trains, scores BLEU."""

    size: dict[str, Any] = SIZES["full"]

    def build(self, hparams: Mapping[str, Any]) -> gpt.TorchState:
        torch.set_num_threads(1)
        self.data = corpus(self.size.get("train_sentences", TRAIN_SENTENCES))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed(self.member.rng))  # weights from the member's stream
            self.model = Translator(
                len(self.data.src_vocab),
                len(self.data.tgt_vocab),
                d_model=self.size["d_model"],
                layers=self.size["layers"],
                ff=2 * self.size["d_model"],
            )
        self.opt = torch.optim.Adam(self.model.parameters(), lr=hparams["lr"], betas=(0.9, 0.98))
        # rng=False: dropout draws from a generator seeded by member.rng at every step
        return gpt.TorchState(
            models={"model": self.model},
            optimizers={"opt": self.opt},
            hparams=hparam_targets(),
            rng=False,
        )

    def step(self) -> dict[str, float]:
        torch.set_num_threads(1)
        data, model, opt = self.data, self.model, self.opt
        model.train()
        total = 0.0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed(self.member.rng))  # dropout masks from the member's stream
            for _ in range(self.size["batches"]):
                rows = torch.from_numpy(self.member.rng.integers(len(data.train_src), size=BATCH))
                src, tgt = data.train_src[rows], data.train_tgt[rows]
                logits = model(src, tgt[:, :-1])
                loss = nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), tgt[:, 1:].reshape(-1), ignore_index=PAD
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                total += float(loss.detach())
        self.state.counters["batches"] = (
            self.state.counters.get("batches", 0) + self.size["batches"]
        )
        # the values that trained this step, read from the optimizer and the modules
        used = {f"used_{k}": float(v) for k, v in self.state.in_effect().items()}
        return {
            "bleu": evaluate(model, data, self.size["eval_sentences"]),
            "loss": total / self.size["batches"],
            "batches": float(self.state.counters["batches"]),
            **used,
        }


def evaluate(model: Translator, data: Corpus, sentences: int) -> float:
    """BLEU of greedy decoding on the first ``sentences`` held-out sentences."""
    model.eval()
    src = data.heldout_src[:sentences]
    ids = model.greedy(src, max_len=data.train_tgt.shape[1])
    return bleu(_decode_text(ids, data.tgt_vocab), data.heldout_refs[:sentences])


def _trainable(size: str) -> type[Translate]:
    # a class per size, so that worker processes (which unpickle it) get the settings
    return type(f"Translate_{size}", (Translate,), {"size": SIZES[size]})


def run(
    *,
    method: str,
    seed: int,
    size: str = "full",
    workers: int = 1,
    storage: str | None = None,
    progress: bool = False,
    population: int | None = None,
) -> gp.Result:
    """One run of ``method`` (see examples/_methods.py: ``"pbt"``, ``"random"``, ...).

    Every method trains the same population (``population``, default the size's) with
    the same space, ready interval and budget; PBT's exploit is a binary tournament.
    """
    policy = _methods.policy(method, select=gp.Tournament())
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    s = SIZES[size]
    return gp.run(
        _trainable(size),
        SPACE,
        metric=METRIC,
        mode=MODE,
        population=population or s["population"],
        ready=gp.Every(s["ready"]),
        budget=gp.Budget(steps=s["steps"]),
        **policy,
        seed=seed,
        workers=workers,
        storage=storage,
        progress=progress,
    )


def main() -> None:
    """The command line: ``--method``, ``--seed``, ``--size``, ``--workers`` (see _cli)."""
    _cli.main(doc=__doc__ or TASK, task=TASK, metric=METRIC, sizes=SIZES, run=run)


if __name__ == "__main__":
    main()
