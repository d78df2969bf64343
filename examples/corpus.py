"""A small German–English parallel corpus, generated deterministically and offline.

Sentences come from a little grammar with the word-order differences that make translation more than
a word lookup: verb-second clauses after a fronted adverb, verb-final subordinate clauses,
separable adjective agreement, gendered articles that all map to "the". Output is lowercased and
tokenized like IWSLT14's preparation, one sentence per line: ``{split}.de`` and ``{split}.en``.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

NOUNS = {  # german noun, gender, plural, english singular, english plural
    "hund": ("m", "hunde", "dog", "dogs"), "katze": ("f", "katzen", "cat", "cats"),
    "kind": ("n", "kinder", "child", "children"), "lehrer": ("m", "lehrer", "teacher", "teachers"),
    "frau": ("f", "frauen", "woman", "women"), "mann": ("m", "männer", "man", "men"),
    "buch": ("n", "bücher", "book", "books"), "haus": ("n", "häuser", "house", "houses"),
    "stadt": ("f", "städte", "city", "cities"), "vogel": ("m", "vögel", "bird", "birds"),
    "apfel": ("m", "äpfel", "apple", "apples"), "brief": ("m", "briefe", "letter", "letters"),
    "auto": ("n", "autos", "car", "cars"), "blume": ("f", "blumen", "flower", "flowers"),
}
ADJECTIVES = {"groß": "big", "klein": "small", "rot": "red", "alt": "old", "neu": "new", "schön": "beautiful",
              "müde": "tired", "klug": "clever"}
VERBS = {  # german 3rd singular, 3rd plural, english 3rd singular, english plural
    "sehen": ("sieht", "sehen", "sees", "see"), "mögen": ("mag", "mögen", "likes", "like"),
    "finden": ("findet", "finden", "finds", "find"), "haben": ("hat", "haben", "has", "have"),
    "suchen": ("sucht", "suchen", "looks for", "look for"), "kaufen": ("kauft", "kaufen", "buys", "buy"),
}
ADVERBS = {"heute": "today", "oft": "often", "morgen": "tomorrow", "manchmal": "sometimes", "jetzt": "now"}
MAIN = {"ich weiß": "i know", "er sagt": "he says", "sie glaubt": "she believes", "wir hoffen": "we hope"}
ARTICLE = {("m", "nom"): "der", ("m", "acc"): "den", ("f", "nom"): "die", ("f", "acc"): "die",
           ("n", "nom"): "das", ("n", "acc"): "das"}
ENDING = {("m", "nom"): "e", ("m", "acc"): "en", ("f", "nom"): "e", ("f", "acc"): "e",
          ("n", "nom"): "e", ("n", "acc"): "e"}


def noun_phrase(rng: random.Random, case: str) -> tuple[list[str], list[str], bool]:
    """(german words, english words, plural?)."""
    noun = rng.choice(sorted(NOUNS))
    gender, plural_de, singular_en, plural_en = NOUNS[noun]
    plural = rng.random() < 0.3
    adjective = rng.choice(sorted(ADJECTIVES)) if rng.random() < 0.4 else None
    if plural:
        de = ["die"] + ([adjective + "en"] if adjective else []) + [plural_de]
        en = ["the"] + ([ADJECTIVES[adjective]] if adjective else []) + [plural_en]
    else:
        de = [ARTICLE[gender, case]] + ([adjective + ENDING[gender, case]] if adjective else []) + [noun]
        en = ["the"] + ([ADJECTIVES[adjective]] if adjective else []) + [singular_en]
    return de, en, plural


def sentence(rng: random.Random) -> tuple[str, str]:
    subject_de, subject_en, plural = noun_phrase(rng, "nom")
    object_de, object_en, _ = noun_phrase(rng, "acc")
    verb = VERBS[rng.choice(sorted(VERBS))]
    verb_de, verb_en = (verb[1], verb[3]) if plural else (verb[0], verb[2])
    form = rng.random()
    if form < 0.25:
        adverb = rng.choice(sorted(ADVERBS))
        de = [adverb, verb_de, *subject_de, *object_de]
        en = [ADVERBS[adverb], *subject_en, verb_en, *object_en]
    elif form < 0.5:
        main = rng.choice(sorted(MAIN))
        de = [*main.split(), ",", "dass", *subject_de, *object_de, verb_de]
        en = [*MAIN[main].split(), "that", *subject_en, verb_en, *object_en]
    else:
        de = [*subject_de, verb_de, *object_de]
        en = [*subject_en, verb_en, *object_en]
    return " ".join([*de, "."]), " ".join(" ".join([*en, "."]).split())


def write_corpus(out: Path, sizes: dict[str, int], seed: int = 0) -> None:
    """Write ``{split}.de`` / ``{split}.en``; splits hold distinct sentences."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out.mkdir(parents=True, exist_ok=True)
    for split, size in sizes.items():
        pairs = []
        while len(pairs) < size:
            de, en = sentence(rng)
            if de not in seen:
                seen.add(de)
                pairs.append((de, en))
        (out / f"{split}.de").write_text("".join(de + "\n" for de, _ in pairs))
        (out / f"{split}.en").write_text("".join(en + "\n" for _, en in pairs))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="write the toy German-English corpus")
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--valid", type=int, default=300)
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_corpus(args.out, {"train": args.train, "valid": args.valid, "test": args.test}, args.seed)


if __name__ == "__main__":
    main()
