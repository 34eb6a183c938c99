"""Needle questions for the HeadKV calibration: reasoning needles (the answer needs a step over an
inserted fact, HeadKV-R2 style), retrieval needles (a plain fact: a number, a place, an object, a
name), and the answer checks (number match; token F1 > 50 for text answers).

Entity rule: every name, place and object added for the retrieval needles (and the held-apart dev
set, ``devset.py``) has an initial in M–Z. The quality report's generalisation check uses
entities starting with A–L that appear nowhere in this file, so calibration never sees them.
"""

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
    task: str = "reasoning"   # "reasoning" or "retrieval"
    template: str = ""        # which template made it (per-question records)


def make_needle(rng: random.Random) -> Needle:
    """One of several reasoning templates (two-hop lookups, a changed plan, a relation, a rule)."""
    a, b = rng.sample(NAMES, 2)
    kind = rng.randrange(5)
    if kind == 0:
        color, n = rng.choice(COLORS), rng.randrange(1000, 9999)
        return Needle(f"{a} carries the {color} key, and the {color} key opens locker {n}.",
                      f"Which locker can {a} open? Answer with the number.", str(n), "number", "reasoning", "key-locker")
    if kind == 1:
        ev = rng.choice(EVENTS)
        first, n = rng.sample(range(10, 99), 2)
        return Needle(f"The {ev} was planned for room {first}, but it was moved to room {n}.",
                      f"In which room is the {ev} held now? Answer with the number.", str(n),
                      "number", "reasoning", "moved-room")
    if kind == 2:
        y = rng.randrange(21, 80)
        return Needle(f"{b} is {y} years old, and {a} is exactly the same age as {b}.",
                      f"How old is {a}? Answer with the number.", str(y), "number",
                      "reasoning", "same-age")
    if kind == 3:
        pet = rng.choice(PETS)
        return Needle(f"The password of the archive is the name of {a}'s dog, and {a}'s dog is "
                      f"called {pet}.",
                      "What is the password of the archive? Answer with one word.", pet, "text",
                      "reasoning", "password-dog")
    city = rng.choice(CITIES)
    return Needle(f"{a} was born in {city}, and {b} was born in the same city as {a}.",
                  f"In which city was {b} born? Answer with one word.", city, "text",
                  "reasoning", "same-city")


# Retrieval needles: every entity starts with M-Z (see the module docstring).
R_NAMES = ["Nikolai", "Odette", "Pascal", "Ramona", "Silvio", "Thea", "Ulrich", "Valeria",
           "Wendell", "Xenia", "Yusuf", "Zora"]
R_OBJECTS = ["microscope", "notebook", "passport", "quilt", "radio", "saxophone", "telescope",
             "umbrella", "violin", "wrench"]
R_PLACES = ["pantry", "safe", "toolbox", "wardrobe", "vault", "shed", "suitcase", "trunk",
            "workshop", "mailroom"]
R_CITIES = ["Munich", "Nantes", "Osaka", "Porto", "Riga", "Seville", "Turin", "Utrecht",
            "Valencia", "Warsaw", "Zagreb", "Montreal"]
R_EVENTS = ["quarterly review", "summer workshop", "trustee meeting", "membership dinner",
            "orchestra rehearsal", "regional summit"]
R_ROLES = [("treasurer", "rowing club"), ("secretary", "walking society"),
           ("referee", "tennis league"), ("mentor", "robotics team"),
           ("navigator", "sailing crew"), ("president", "stamp society")]
RETRIEVAL_ENTITIES = R_NAMES + R_OBJECTS + R_PLACES + R_CITIES


def make_retrieval(rng: random.Random) -> Needle:
    """A plain fact to find: where an object is kept, the city of an event, a number, a name, a
    price (HeadKV's retrieval needles); one fact, no reasoning step."""
    kind = rng.randrange(5)
    if kind == 0:
        obj, place = rng.choice(R_OBJECTS), rng.choice(R_PLACES)
        return Needle(f"The {obj} is kept in the {place}.",
                      f"Where is the {obj} kept? Answer with one word.", place, "text",
                      "retrieval", "object-place")
    if kind == 1:
        ev, city = rng.choice(R_EVENTS), rng.choice(R_CITIES)
        return Needle(f"The {ev} is in {city}.",
                      f"In which city is the {ev}? Answer with one word.", city, "text",
                      "retrieval", "event-city")
    if kind == 2:
        name, n = rng.choice(R_NAMES), rng.randrange(100, 999)
        return Needle(f"{name}'s phone extension is {n}.",
                      f"What is {name}'s phone extension? Answer with the number.", str(n),
                      "number", "retrieval", "extension")
    if kind == 3:
        (role, team), name = rng.choice(R_ROLES), rng.choice(R_NAMES)
        return Needle(f"The {role} of the {team} is {name}.",
                      f"Who is the {role} of the {team}? Answer with the name.", name, "text",
                      "retrieval", "role-name")
    obj, n = rng.choice(R_OBJECTS), rng.randrange(20, 990)
    return Needle(f"The {obj} costs {n} dollars.",
                  f"How many dollars does the {obj} cost? Answer with the number.", str(n),
                  "number", "retrieval", "price")


TASKS = {"reasoning": make_needle, "retrieval": make_retrieval}


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
