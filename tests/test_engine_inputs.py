"""One input type: a plain text is Input(text), every input is encoded by the tokenizer, and the cache
keys and stored values are what earlier versions wrote (an existing cache file keeps hitting)."""

from __future__ import annotations

import orjson
import pytest

from sentictl.engine import Engine, ResultCache
from sentictl.engine.cache import cache_key
from sentictl.engine.model import Model
from sentictl.engine.records import Input

TEXTS = ["Profit rose.", "Shares fell after the bank cut its outlook for the year.", "Dividend raised"]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return Model(tiny_model_dir, variant="int8", threads=1)


def test_cache_key_function_is_unchanged():
    # Pinned: a changed key function would orphan every cache file already written.
    assert cache_key("abc:truncate", "Profit rose.") == "41298b6a29bee00bed049cfb030fe0d3"
    assert cache_key("abc:truncate:pair-right", '["Profit rose.","Shares fell."]') == "008af527a3e875cfadfe99495563397e"


def test_plain_text_is_input_of_text(model):
    engine = Engine(model)
    assert engine.inputs(["a", Input("a")]) == [Input("a"), Input("a")]
    assert engine.classify(TEXTS) == engine.classify([Input(t) for t in TEXTS])


def test_tokenizer_encodes_a_plain_text_as_cls_ids_sep(model):
    long_text = " ".join(["profit rose"] * 200)
    for x, e in zip(TEXTS + [long_text], model.encode_inputs([Input(t) for t in TEXTS + [long_text]])):
        ids = model.encode([x.text if isinstance(x, Input) else x])[0][: model.max_length - 2]
        assert e.rows == [[model._cls, *ids, model._sep]]
        assert e.types == [[0] * len(e.rows[0])]
        assert e.truncated == (x == long_text)


def test_stored_values_and_key_spaces_are_unchanged(model, tmp_path):
    with ResultCache(tmp_path / "c.sqlite") as cache:
        engine = Engine(model, cache)
        pair = engine.input("Profit rose.", "Shares fell.")
        left = engine.input(TEXTS[1], None, "left")
        engine.classify([TEXTS[0], pair, left])
        ns = model.cache_namespace
        plain = cache.get_many(ns, [TEXTS[0]])[TEXTS[0]]
        assert list(plain) == ["text", "label", "score", "scores", "model", "cache_hit", "logits"]
        assert plain["text"] == TEXTS[0] and plain["cache_hit"] is False
        key = orjson.dumps(["Profit rose.", "Shares fell."]).decode()
        stored_pair = cache.get_many(f"{ns}:pair-right", [key])[key]
        assert list(stored_pair) == ["text", "label", "score", "scores", "model", "cache_hit", "logits", "text_pair"]
        assert (stored_pair["text"], stored_pair["text_pair"]) == ("Profit rose.", "Shares fell.")
        assert list(cache.get_many(f"{ns}:single-left", [TEXTS[1]])) == [TEXTS[1]]


def test_a_value_stored_by_an_earlier_version_is_a_hit(model, tmp_path):
    ns = model.cache_namespace
    old = {
        "text": "Old text.",
        "label": "negative",
        "score": 0.5,
        "scores": {"positive": 0.25, "negative": 0.5, "neutral": 0.25},
        "model": "earlier",
        "cache_hit": False,
        "logits": {"positive": 0.0, "negative": 0.7, "neutral": 0.0},
    }
    old_pair = {**old, "text": "A.", "text_pair": "B."}
    with ResultCache(tmp_path / "c.sqlite") as cache:
        cache.put_many(ns, [("Old text.", old)])
        cache.put_many(f"{ns}:pair-left", [(orjson.dumps(["A.", "B."]).decode(), old_pair)])
        engine = Engine(model, cache)
        plain, pair = engine.classify(["Old text.", engine.input("A.", "B.", "left")])
        assert plain == {**{k: v for k, v in old.items() if k != "logits"}, "cache_hit": True}
        assert pair == {**{k: v for k, v in old_pair.items() if k != "logits"}, "cache_hit": True}
        assert engine.classify(["Old text."], logits=True)[0]["logits"] == old["logits"]
        assert cache.misses == 0


def test_prepare_then_infer_is_classify(model, tmp_path):
    with ResultCache(tmp_path / "c.sqlite") as cache:
        engine = Engine(model, cache)
        engine.classify([TEXTS[0]])
        pending = engine.prepare(TEXTS + [TEXTS[1]], logits=True)
        assert [e.input.text for e in pending.misses] == TEXTS[1:]  # one hit, the repeat de-duplicated
        got = pending.finish(engine.infer(pending.misses, arrival_order=True))
        assert [r["text"] for r in got] == TEXTS + [TEXTS[1]]
        assert [r["cache_hit"] for r in got] == [True, False, False, False]
        assert all("logits" in r for r in got)
        assert engine.classify(TEXTS) == [
            {k: v for k, v in r.items() if k != "logits"} | {"cache_hit": True} for r in got[:3]
        ]
