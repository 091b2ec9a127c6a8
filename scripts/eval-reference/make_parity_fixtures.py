#!/usr/bin/env python3
"""Writes the reference fixtures the evaluation metrics are tested against.

The Rust metrics in services/evaluation/src/metrics must give the same
numbers as the reference implementations: sacrebleu (BLEU, 13a tokenizer,
defaults) and Google's rouge-score (ROUGE-1/2/L/Lsum, with and without the
Porter stemmer, which is NLTK's). This script draws varied
hypothesis/reference pairs — unicode, punctuation, numbers, HTML entities,
empty and whitespace-only lines, identical pairs, several-line texts — from
the docstrings of Python's standard library with a fixed seed, scores them
with the references, and writes:

  services/evaluation/tests/fixtures/parity.json   pairs and their scores
  services/evaluation/tests/fixtures/porter.tsv    words and NLTK's stems

Run it with scripts/eval-reference/make-fixtures.sh (a venv with pinned
versions); the output is committed, so the Rust tests need no Python.
"""

import collections
import importlib.metadata
import json
import os
import random
import re
import sys

import sacrebleu
from nltk.stem import porter
from rouge_score import rouge_scorer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "services", "evaluation", "tests", "fixtures")
ROUGE_TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]


def stdlib_sentences():
    """English sentences from the standard library's docstrings, deterministically."""
    libdir = os.path.dirname(os.__file__)
    sentences = []
    for name in sorted(os.listdir(libdir)):
        if not name.endswith(".py"):
            continue
        try:
            with open(os.path.join(libdir, name), encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, OSError):
            continue
        for doc in re.findall(r'"""(.*?)"""', text, re.S):
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                words = sentence.split()
                if 4 <= len(words) <= 40 and not any(c in sentence for c in "{}>>>"):
                    sentences.append(sentence)
    return sentences


UNICODE_BITS = [
    "café", "naïve", "Größe", "İstanbul", "ΣΊΣΥΦΟΣ", "日本語のテキスト", "中文，标点。",
    "emoji 🙂👍", "—", "–", "“quoted”", "‘single’", "…", "Kelvin 5K", "Ünïcödé",
    "\u00a0non-breaking", "zero\u200bwidth", "ﬁligature", "١٢٣ arabic digits", "½ cup",
]
PUNCT_BITS = [
    "e.g.", "i.e.,", "U.S.A.", "(parenthesised)", "[bracketed]", "{braced}", "quote's",
    "don't", "it’s", "a/b", "x+y=z", "50%", "$3.50", "#hash", "@user", "semi;colon",
    "colon:", "question?", "bang!", "tilde~", "back`tick", "caret^", "under_score",
    "pipe|", "back\\slash", "&amp;", "&lt;tag&gt;", "&quot;q&quot;", "<skipped>", "--", "...",
]
NUMBER_BITS = [
    "3.14", "1,000", "1,000,000.5", "2024-01-31", "10-20", "v1.2.3", "42", "0.5.", "7,",
    "-3", "4-", "1e10", "12:30", "99.9%", "3rd", "2x", ".5", ",5",
]


def mutate(rng, sentence, pool):
    words = sentence.split()
    kind = rng.choice([0, 1, 2, 3, 4, 4, 4, 5, 6, 7, 8])
    if kind == 0:  # drop some words
        words = [w for w in words if rng.random() > 0.25] or words[:1]
    elif kind == 1:  # swap neighbours
        for _ in range(max(1, len(words) // 5)):
            i = rng.randrange(len(words))
            j = min(len(words) - 1, i + 1)
            words[i], words[j] = words[j], words[i]
    elif kind == 2:  # replace with words of another sentence
        other = rng.choice(pool).split()
        for _ in range(max(1, len(words) // 4)):
            words[rng.randrange(len(words))] = rng.choice(other)
    elif kind == 3:  # change case
        words = [w.upper() if rng.random() < 0.3 else w.lower() for w in words]
    elif kind == 4:  # inflect: plural/past/gerund forms exercise the stemmer
        suffixes = ["s", "es", "ed", "ing", "ly", "ness", "ation", "ies", "ful", "ize"]
        words = [w + rng.choice(suffixes) if w.isalpha() and rng.random() < 0.4 else w for w in words]
    elif kind == 5:  # punctuation glued to words
        words = [w + rng.choice(".,;:!?") if rng.random() < 0.3 else w for w in words]
    elif kind == 6:  # a completely different sentence
        words = rng.choice(pool).split()
    elif kind == 7:  # truncate
        words = words[: max(1, len(words) // 2)]
    # kind 8: unchanged words, different spacing below
    text = " ".join(words)
    if rng.random() < 0.2:
        text = text.replace(" ", rng.choice(["  ", "\t", " \u3000 "]), 1)
    return text


def sprinkle(rng, text):
    words = text.split(" ")
    for _ in range(rng.randrange(1, 4)):
        bit = rng.choice(rng.choice([UNICODE_BITS, PUNCT_BITS, NUMBER_BITS]))
        words.insert(rng.randrange(len(words) + 1), bit)
    return " ".join(words)


def make_pairs(rng, sentences):
    pairs = []
    fixed = [
        ("", ""), ("", "a reference with words"), ("a hypothesis with words", ""),
        ("   ", "spaces only on the other side"), ("\t \u3000", "\u00a0"),
        ("identical text, identical score.", "identical text, identical score."),
        ("The cat sat on the mat.", "The cat sat on the mat."),
        ("a", "a"), ("a b", "a b c d e f"), ("one two three four five", "one two three four five six"),
        ("the the the the the the the", "the cat is on the mat"),
        ("3.14 is pi, 1,000 is a thousand.", "pi is 3.14 and a thousand is 1,000"),
        ("The 2024-01-31 release (v1.2.3) fixed 10-20 bugs.", "Release v1.2.3 on 2024-01-31 fixed 10 - 20 bugs"),
        ("Tom &amp; Jerry &lt;3 &quot;cartoons&quot;", "Tom & Jerry <3 \"cartoons\""),
        ("<skipped> words were skipped", "words were skipped"),
        ("ΣΊΣΥΦΟΣ went to İstanbul for café naïve Größe", "sisyphus went to istanbul for cafe naive grosse"),
        ("日本語のテキスト と 中文，标点。", "日本語のテキスト と 中文，标点。"),
        ("emoji 🙂👍 in a line", "emoji in a line 🙂"),
        ("trailing spaces   ", "trailing spaces"),
        ("Running runners ran quickly; generalizations generalize.", "The runner runs quick generalization general"),
        ("happiness happily happy happier", "happy happiness happily"),
        ("relational conditional rational valency hesitancy", "relate condition ration valence hesitance"),
        ("skies dying lying tying news innings outings cannings", "sky die lie tie news inning outing canning"),
        ("a\x1cb\x1dc\x1ed\x1ff", "a b c d f"),
        ("first sentence here.\nsecond sentence there.", "first sentence there.\nsecond sentence here."),
        ("one line only", "first line\nsecond line\nthird line"),
        ("line with hy-\nphen break", "line with hyphen break"),
        ("\n\nempty lines around\n\n", "empty lines around"),
        ("12:30 99.9% 3rd 2x .5 ,5", "12 : 30 99.9 % 3rd 2x 0.5 5"),
        ("0.5. 7, -3 4- 1e10", "0.5 . 7 , - 3 4 - 1e10"),
    ]
    pairs.extend(fixed)
    while len(pairs) < 260:
        reference = rng.choice(sentences)
        roll = rng.random()
        if roll < 0.08:
            hypothesis = reference  # identical
        elif roll < 0.12:
            hypothesis = ""  # empty hypothesis
        else:
            hypothesis = mutate(rng, reference, sentences)
        if rng.random() < 0.35:
            hypothesis = sprinkle(rng, hypothesis) if hypothesis else hypothesis
        if rng.random() < 0.15:
            reference = sprinkle(rng, reference)
        if rng.random() < 0.12:
            hypothesis += "\n" + mutate(rng, rng.choice(sentences), sentences)
            reference += "\n" + rng.choice(sentences)
        pairs.append((hypothesis, reference))
    return pairs


def score_pairs(pairs):
    scorers = {
        False: rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=False),
        True: rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=True),
    }
    out = []
    for hypothesis, reference in pairs:
        entry = {
            "hypothesis": hypothesis,
            "reference": reference,
            "sentence_bleu": sacrebleu.sentence_bleu(hypothesis, [reference]).score,
        }
        for stem, scorer in scorers.items():
            scores = scorer.score(reference, hypothesis)
            entry["rouge_stemmed" if stem else "rouge"] = {
                t: [scores[t].precision, scores[t].recall, scores[t].fmeasure] for t in ROUGE_TYPES
            }
        out.append(entry)
    return out


def corpus_slices(pairs):
    """Corpus BLEU over several slices, the single-line pairs among them (the CLI's input)."""
    single = [i for i, (h, r) in enumerate(pairs) if "\n" not in h and "\n" not in r]
    slices = {
        "all": list(range(len(pairs))),
        "single_line": single,
        "first_10": list(range(10)),
        "non_empty": [i for i, (h, r) in enumerate(pairs) if h.strip() and r.strip()],
    }
    result = {}
    for name, indices in slices.items():
        hyps = [pairs[i][0] for i in indices]
        refs = [pairs[i][1] for i in indices]
        result[name] = {"indices": indices, "bleu": sacrebleu.corpus_bleu(hyps, [refs]).score}
    return result


def porter_words(sentences, rng):
    counts = collections.Counter()
    for sentence in sentences:
        for word in re.findall(r"[a-z]+", sentence.lower()):
            if len(word) > 3:
                counts[word] += 1
    common = [w for w, _ in counts.most_common(3000)]
    rare = sorted(set(counts) - set(common))
    words = common + rng.sample(rare, min(3000, len(rare)))
    words += ["skies", "dying", "lying", "tying", "news", "innings", "inning", "outings",
              "cannings", "howe", "proceed", "exceed", "succeed", "ties", "died", "spied",
              "generalization", "generalizations", "oscillators", "analogies", "archaeology",
              "fully", "hopefulli", "formalli", "electricity", "yyyy", "syzygy", "crying",
              "agreed", "feed", "bleed", "hopping", "filing", "failing", "controll", "roll"]
    stemmer = porter.PorterStemmer()
    return sorted(set(words)), stemmer


def main():
    rng = random.Random(20261129)
    sentences = stdlib_sentences()
    if len(sentences) < 500:
        sys.exit(f"only {len(sentences)} sentences found in the standard library")
    pairs = make_pairs(rng, sentences)
    doc = {
        "generated_by": "scripts/eval-reference/make_parity_fixtures.py",
        "versions": {p: importlib.metadata.version(p) for p in ["sacrebleu", "rouge-score", "nltk"]},
        "python": sys.version.split()[0],
        "pairs": score_pairs(pairs),
        "corpus_bleu": corpus_slices(pairs),
    }
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "parity.json"), "w", encoding="utf-8") as f:
        # One pair per line keeps the diff of a regeneration readable.
        f.write("{\n")
        for key in ["generated_by", "versions", "python", "corpus_bleu"]:
            f.write(f" {json.dumps(key)}: {json.dumps(doc[key], ensure_ascii=False)},\n")
        f.write(' "pairs": [\n')
        lines = [json.dumps(p, ensure_ascii=False) for p in doc["pairs"]]
        f.write(",\n".join("  " + line for line in lines))
        f.write("\n ]\n}\n")
    words, stemmer = porter_words(sentences, rng)
    with open(os.path.join(OUT, "porter.tsv"), "w", encoding="utf-8") as f:
        for word in words:
            f.write(f"{word}\t{stemmer.stem(word)}\n")
    print(f"{len(pairs)} pairs, {len(words)} words -> {OUT}")


if __name__ == "__main__":
    main()
