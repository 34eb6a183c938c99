"""Needle questions whose answer needs reasoning over an inserted fact (HeadKV-R2 style), and the
answer checks (number match; token F1 > 50 for text answers)."""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass

NAMES = ["Mira", "Tomas", "Anika", "Boris", "Celia", "Dmitri", "Esther", "Farid", "Greta", "Hugo",
         "Ines", "Jonah", "Keiko", "Lars", "Marta", "Nadia", "Oskar", "Priya", "Quentin", "Rosa"]
COLORS = ["red", "blue", "green", "yellow", "silver", "black", "orange", "purple"]
EVENTS = ["budget meeting", "chess tournament", "poetry reading", "team lunch", "board review",
          "piano recital"]
PETS = ["Biscuit", "Pepper", "Marble", "Juniper", "Waffles", "Clover", "Pickle", "Nutmeg"]
CITIES = ["Lisbon", "Oslo", "Nairobi", "Lima", "Hanoi", "Tallinn", "Quito", "Perth"]


@dataclass(frozen=True)
class Needle:
    fact: str       # the sentence inserted into the haystack
    question: str   # asked after the haystack
    answer: str     # expected answer
    kind: str       # "number" or "text"


def make_needle(rng: random.Random) -> Needle:
    """One of several reasoning templates (two-hop lookups, a changed plan, a relation, a rule)."""
    a, b = rng.sample(NAMES, 2)
    kind = rng.randrange(5)
    if kind == 0:
        color, n = rng.choice(COLORS), rng.randrange(1000, 9999)
        return Needle(f"{a} carries the {color} key, and the {color} key opens locker {n}.",
                      f"Which locker can {a} open? Answer with the number.", str(n), "number")
    if kind == 1:
        ev = rng.choice(EVENTS)
        first, n = rng.sample(range(10, 99), 2)
        return Needle(f"The {ev} was planned for room {first}, but it was moved to room {n}.",
                      f"In which room is the {ev} held now? Answer with the number.", str(n),
                      "number")
    if kind == 2:
        y = rng.randrange(21, 80)
        return Needle(f"{b} is {y} years old, and {a} is exactly the same age as {b}.",
                      f"How old is {a}? Answer with the number.", str(y), "number")
    if kind == 3:
        pet = rng.choice(PETS)
        return Needle(f"The password of the archive is the name of {a}'s dog, and {a}'s dog is "
                      f"called {pet}.",
                      "What is the password of the archive? Answer with one word.", pet, "text")
    city = rng.choice(CITIES)
    return Needle(f"{a} was born in {city}, and {b} was born in the same city as {a}.",
                  f"In which city was {b} born? Answer with one word.", city, "text")


def first_number(text: str) -> str | None:
    m = re.search(r"\d+", text.replace(",", ""))
    return m.group(0) if m else None


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def f1(expected: str, text: str) -> float:
    """Token F1 (0..1) between the expected answer and the generated text."""
    want, got = words(expected), words(text)
    common = sum((Counter(want) & Counter(got)).values())
    if not common:
        return 0.0
    p, r = common / len(got), common / len(want)
    return 2 * p * r / (p + r)


FILLER = {"the", "answer", "is", "a", "an", "it", "was", "in", "of"}


def answer_words(needle: Needle, text: str) -> str:
    """The generated text without the words it repeats from the question and filler ("The answer
    is ..."): small models answer in a sentence ("The password of the archive is "Pepper"")."""
    drop = set(words(needle.question)) | FILLER
    return " ".join(w for w in words(text) if w not in drop)


def is_correct(needle: Needle, text: str) -> bool:
    """Numbers: the first number in the answer is the expected one. Text: token F1 > 0.5 between
    the expected answer and :func:`answer_words` of the generated text."""
    if needle.kind == "number":
        return first_number(text) == needle.answer
    return f1(needle.answer, answer_words(needle, text)) > 0.5


def answer_span(needle: Needle, text: str) -> tuple[int, int] | None:
    """Where the expected answer first appears in ``text`` as characters ``(start, end)``, or None:
    numbers as a whole digit run (thousands commas allowed, as :func:`first_number` allows them),
    text as a whole word, case-insensitive. For an answer :func:`is_correct` accepts, this is the
    answer the model gave."""
    if needle.kind == "number":
        pattern = r"(?<![0-9,])" + ",?".join(re.escape(d) for d in needle.answer) + r"(?![0-9])"
        m = re.search(pattern, text)
    else:
        m = re.search(r"(?<![a-z0-9])" + re.escape(needle.answer.lower()) + r"(?![a-z0-9])",
                      text.lower())
    return (m.start(), m.end()) if m else None
