"""Two models on one test set (``analysis.core.two_models``) and its views: Compare's second model, its galleries'
links into Inspect, and Inspect opening a test-set image by ``?index=N``."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from helpers import chart_data, page, plotly_values
from routescope.analysis.core.two_models import OUTCOMES, easy_for_one, paired, summary

TIMEOUT = 600


def table(predicted, correct, macs, confidence=None) -> pd.DataFrame:
    classes = ["a", "b"]
    return pd.DataFrame(
        {
            "class": pd.Categorical(["a"] * len(macs), categories=classes),
            "predicted": predicted,
            "correct": correct,
            "confidence": confidence or [0.9] * len(macs),
            "macs": macs,
        },
        index=pd.Index(range(len(macs)), name="index"),
    )


def test_paired_outcomes_agreement_and_relative_ease():
    first = table(["a", "a", "b", "b"], [True, True, False, False], [1.0, 2.0, 3.0, 4.0])
    second = table(["a", "b", "a", "b"], [True, False, True, False], [40.0, 30.0, 20.0, 10.0])
    pairs = paired(first, second)
    assert list(pairs["outcome"]) == ["both right", "only the first right", "only the second right", "both wrong"]
    assert list(pairs["agree"]) == [True, False, False, True]
    facts = summary(pairs)
    assert facts["agree"] == 0.5 and [facts[o] for o in OUTCOMES] == [1, 1, 1, 1]
    assert facts["macs_1"] == 2.5 and facts["macs_2"] == 25.0
    assert facts["cost_correlation"] == pytest.approx(-1.0)  # opposite cost orders
    easy_first, easy_second = easy_for_one(pairs, k=1)
    # image 0: the first's cheapest and the second's costliest; image 3 the reverse
    assert list(easy_first.index) == [0] and list(easy_second.index) == [3]


def test_a_static_models_easy_and_hard_are_its_confidence():
    dynamic = table(["a"] * 3, [True] * 3, [1.0, 2.0, 3.0])
    static = table(["a"] * 3, [True] * 3, [5.0, 5.0, 5.0], confidence=[0.5, 0.99, 0.7])
    pairs = paired(dynamic, static)
    assert list(pairs["rank_2"].round(3)) == [0.833, 0.167, 0.5]  # the least sure is its hardest
    assert math.isnan(summary(pairs)["cost_correlation"]), "one cost for every image: nothing to correlate"
    easy_dynamic, easy_static = easy_for_one(pairs, k=3)
    assert list(easy_dynamic.index) == [0] and set(easy_static.index) == {1, 2}


def test_paired_needs_the_same_images_and_keeps_unlabelled_apart():
    first = table(["a"], [pd.NA], [1.0]).astype({"correct": "boolean"})
    second = table(["b"], [pd.NA], [2.0]).astype({"correct": "boolean"})
    assert list(paired(first, second)["outcome"]) == ["unlabelled"]
    with pytest.raises(ValueError, match="share no image"):
        paired(first, second.set_axis(pd.Index([7], name="index")))


def test_compare_traces_a_second_model_and_links_each_image_to_inspect():
    from routescope.analysis.core.catalog import featured

    flagship, control = featured()["skipnet"]["flagship"], featured()["skipnet"]["controls"][0]
    at = page("compare")
    at.query_params["model"] = flagship
    at.run(timeout=TIMEOUT)
    at.toggle(key="compare-second").set_value(True).run(timeout=TIMEOUT)
    assert not at.exception, at.exception
    assert at.selectbox(key="compare-second-model").value == control  # the flagship's control by default
    agree = next(m for m in at.metric if m.label == "Same prediction")
    assert agree.value.endswith("%") and "500 images" in agree.delta
    assert next(m for m in at.metric if m.label == "Cost agreement").value == "–", "the dense control: one cost"
    bubbles = next(c for c in chart_data(at) if "both models" in c["layout"]["title"]["text"])
    assert sum(sum(plotly_values(trace["marker"]["size"])) for trace in bubbles["data"]) == 500  # every image
    assert any(m.value.startswith(f"**Easy for `{flagship}`, hard for `{control}`**") for m in at.markdown)
    assert any(m.value.startswith("**Predicted differently**") for m in at.markdown)
    links = [m.value for m in at.markdown if "index=" in m.value]  # page links (plain links in a bare AppTest)
    assert links and all(f"model={flagship}" in link and "inspect?" in link for link in links)


def test_inspect_opens_the_test_image_a_link_names():
    at = page("inspect")
    at.query_params.update({"index": "7"})
    at.run(timeout=TIMEOUT)
    assert not at.exception, at.exception
    picked = at.multiselect(key="inspect-samples").value
    assert len(picked) == 1 and picked[0].startswith("fashion-mnist-subset #7 (")
    assert at.query_params["index"] in ("7", ["7"]), "the URL keeps naming the image"
    bad = page("inspect")
    bad.query_params.update({"index": "99999"})
    bad.run(timeout=TIMEOUT)
    assert not bad.exception and any("#99999" in w.value for w in bad.warning)
