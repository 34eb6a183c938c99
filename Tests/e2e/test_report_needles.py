"""The statistics grid's needle prompts (kvd_transformers.report.needles): deterministic in the seed,
entity words disjoint from the calibration helper's, the answer inside the prompt at the right
depth, prompt lengths within tolerance, both prompt formats, the answer checks. A character-level
tokenizer keeps it independent of any model; one test uses SmolLM2's tokenizer when it is cached."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from kvd_transformers.report import needles  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


class CharTok:
    """One token per character; optional chat template."""

    def __init__(self, chat: bool = False):
        self.chat_template = "x" if chat else None

    def __call__(self, text, return_tensors=None):
        ids = [ord(c) for c in text]
        return SimpleNamespace(input_ids=torch.tensor([ids]) if return_tensors == "pt" else ids)

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(i) for i in ids)

    def apply_chat_template(self, msgs, add_generation_prompt=True, tokenize=False):
        return f"<user>{msgs[0]['content']}</user><assistant>"


def corpus(n=60000):
    words = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit"]
    text = " ".join(words[i % len(words)] + str(i % 97) for i in range(n // 8))
    return [ord(c) for c in text][:n]


def test_deterministic_in_seed_and_distinct_per_prompt():
    a = [needles.make_needle("places", 1024, i, 20, 0, 50000) for i in range(20)]
    b = [needles.make_needle("places", 1024, i, 20, 0, 50000) for i in range(20)]
    c = [needles.make_needle("places", 1024, i, 20, 1, 50000) for i in range(20)]
    assert a == b
    assert a != c
    assert len({n.offset for n in a}) == 20
    assert len({n.depth for n in a}) == 20
    nums = [needles.make_needle("numbers", 512, i, 20, 0, 50000) for i in range(20)]
    assert len({n.answer for n in nums}) >= 18  # 4-digit codes: collisions are rare
    assert all(re.fullmatch(r"\d{4}", n.answer) for n in nums)


def test_depths_span_005_to_095():
    ds = needles.depths(20, 0, "numbers", 2048)
    assert min(ds) == pytest.approx(0.05) and max(ds) == pytest.approx(0.95)
    assert sorted(ds) != ds  # shuffled, so depth is not confounded with prompt index
    assert needles.depths(1, 0, "numbers", 512) == [0.5]


def test_entities_a_to_l_and_disjoint_from_calibration():
    from kvd_transformers.calibrate import needles as calib

    ours = needles.entity_words()
    assert all("a" <= w[0] <= "l" for w in ours), sorted(w for w in ours if w[0] > "l")
    theirs = set()
    for lst in (calib.NAMES, calib.COLORS, calib.EVENTS, calib.PETS, calib.CITIES):
        for w in lst:
            theirs.update(w.lower().split())
    # every word of the calibration helper's source, templates included
    src = Path(calib.__file__).read_text().lower()
    theirs |= set(re.findall(r"[a-z]+", src))
    assert not ours & theirs, sorted(ours & theirs)


@pytest.mark.parametrize("chat", [False, True])
@pytest.mark.parametrize("kind", needles.KINDS)
@pytest.mark.parametrize("length", [512, 2048])
def test_prompt_holds_answer_at_depth_and_length(chat, kind, length):
    tok, corp = CharTok(chat), corpus()
    for i in range(0, 20, 3):
        nd = needles.make_needle(kind, length, i, 20, 0, len(corp))
        ids, pos = needles.build(tok, corp, nd, length)
        text = tok.decode(ids[0].tolist())
        assert abs(ids.shape[1] - length) <= 8, (ids.shape, length)  # strip() at the joins
        assert nd.fact in text and nd.answer in nd.fact
        assert text.index(nd.fact) == pos
        overhead = len(needles.wrap(tok, f"\n\n{nd.fact}\n\n", nd.question))
        prefix = needles.wrap(tok, "\x00", "q").index("\x00")  # the template before the body
        assert abs((pos - prefix) / (length - overhead) - nd.depth) < 0.01
        if chat:
            assert text.startswith("<user>") and text.endswith("<assistant>")
        else:
            assert text.endswith(f"Question: {nd.question}\nAnswer:")


def test_answer_checks():
    num = needles.Needle("numbers", 0, "", "", "4821", 0.5, 0)
    assert needles.is_correct(num, "The secret vault code is 4821.")
    assert not needles.is_correct(num, "The code is 48211")
    assert not needles.is_correct(num, "14821")
    place = needles.Needle("places", 0, "", "", "Ghent", 0.5, 0)
    assert needles.is_correct(place, "It is hidden in GHENT, of course")
    assert not needles.is_correct(place, "Ghentish lands")
    assert not needles.is_correct(place, "Geneva")
    with pytest.raises(ValueError):
        needles.make_needle("colours", 512, 0, 20, 0, 1000)


def test_places_corpus_is_torch_docstrings():
    text = needles.places_corpus_text()
    assert len(text) > 100_000
    assert "Applies" in text  # torch.nn layer docstrings
    assert "GNU GENERAL PUBLIC LICENSE" not in text


def test_real_tokenizer_lengths_when_cached():
    from kvd_transformers.report.model import cache_dir

    d = cache_dir()
    if not (d / "tokenizer.json").is_file() and not (d / "tokenizer_config.json").is_file():
        pytest.skip("SmolLM2 report cache absent")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    corp = needles.corpora(tok)
    for kind in needles.KINDS:
        for length in (512, 4096):
            nd = needles.make_needle(kind, length, 3, 20, 0, len(corp[kind]))
            ids, pos = needles.build(tok, corp[kind], nd, length)
            assert abs(ids.shape[1] - length) <= 0.02 * length
            assert nd.answer.lower() in tok.decode(ids[0, pos:pos + 40]).lower()
