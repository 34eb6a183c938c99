"""The held-apart dev set that chooses between HeadKV score files: needle prompts from text,
templates, entities and seeds the calibration never uses.

* Text: docstrings of ``texts.DEV_MODULES`` (disjoint from the calibration's modules and from
  pydoc topics); never the quality report's license texts or transformers/torch docstrings.
* Templates: six, three retrieval (a place, a city, a number) and three reasoning (a same-train
  platform, an owner's store room, an object inside a place); none is a calibration template.
* Entities: own lists, disjoint from ``needles.py``'s, all starting with M–Z (the report's
  generalisation check uses A–L).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from kvd_transformers.calibrate.needles import Needle

D_NAMES = ["Magnus", "Noemi", "Orla", "Pieter", "Rafael", "Sabine", "Tobias", "Ursula", "Viktor",
           "Wilma", "Yara", "Zeno"]
D_OBJECTS = ["mandolin", "napkin", "oboe", "padlock", "ruler", "sextant", "thermos", "typewriter",
             "vase", "whistle"]
D_PLACES = ["mudroom", "nursery", "observatory", "parlor", "scullery", "study", "tower", "veranda"]
D_CITIES = ["Nuremberg", "Marseille", "Palermo", "Rotterdam", "Salzburg", "Toulouse", "Uppsala",
            "Verona", "Winnipeg", "York"]
DEV_ENTITIES = D_NAMES + D_OBJECTS + D_PLACES + D_CITIES
TEMPLATES = ("left-place", "factory-city", "ticket", "same-train", "owner-room", "inside-place")
SEED_BASE = 7_000_000  # calibration seeds are seed * 1_000_003 + i with small seeds and i


def make_dev_needle(template: str, rng: random.Random) -> Needle:
    a, b = rng.sample(D_NAMES, 2)
    obj, place, city = rng.choice(D_OBJECTS), rng.choice(D_PLACES), rng.choice(D_CITIES)
    if template == "left-place":
        return Needle(f"{a} left the {obj} in the {place}.",
                      f"Where did {a} leave the {obj}? Answer with one word.", place, "text",
                      "retrieval", template)
    if template == "factory-city":
        return Needle(f"The {obj} factory is located in {city}.",
                      f"In which city is the {obj} factory? Answer with one word.", city, "text",
                      "retrieval", template)
    if template == "ticket":
        n = rng.randrange(1000, 9999)
        return Needle(f"The ticket number for {a} is {n}.",
                      f"What is the ticket number for {a}? Answer with the number.", str(n),
                      "number", "retrieval", template)
    if template == "same-train":
        n = rng.randrange(2, 19)
        return Needle(f"{a}'s train leaves from platform {n}, and {b} takes the same train as {a}.",
                      f"From which platform does {b}'s train leave? Answer with the number.",
                      str(n), "number", "reasoning", template)
    if template == "owner-room":
        return Needle(f"The {obj} belongs to {a}, and everything {a} owns is stored in the {place}.",
                      f"Where is the {obj} stored? Answer with one word.", place, "text",
                      "reasoning", template)
    if template == "inside-place":
        return Needle(f"{a} locked the {place}, and the only thing inside the {place} is a {obj}.",
                      f"What is inside the room that {a} locked? Answer with one word.", obj,
                      "text", "reasoning", template)
    raise ValueError(f"unknown dev template {template!r}")


@dataclass(frozen=True)
class DevItem:
    index: int
    needle: Needle
    length: int
    depth: float
    seed: int


def dev_items(count: int = 30, length: int = 1024,
              depths=(0.1, 0.3, 0.5, 0.7, 0.9)) -> list[DevItem]:
    """``count`` dev prompts: templates cycle fastest, then depths; deterministic."""
    out = []
    for i in range(count):
        template = TEMPLATES[i % len(TEMPLATES)]
        depth = depths[(i // len(TEMPLATES)) % len(depths)]
        seed = SEED_BASE + i
        out.append(DevItem(i, make_dev_needle(template, random.Random(seed)), length, depth, seed))
    return out
