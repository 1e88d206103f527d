"""Hub preference schemas -> comparisons, on hand-made rows of the same schema (no hub needed)."""

from __future__ import annotations

import datasets
import pytest

from jaxcook.data import DataFormatError
from jaxcook.preference import (
    HelpSteer3ComparisonBuilder,
    HFComparisonBuilder,
    HFComparisonRecords,
    HHRLHFComparisonBuilder,
    PairConverter,
    UltraFeedbackComparisonBuilder,
    get_preference_builder,
    helpsteer3_row,
    hh_rlhf_row,
    labeled_comparison_to_json,
    ultrafeedback_row,
)
from tests.preference.helpers import labeled


def U(text):
    return {"role": "user", "content": text}


def A(text):
    return {"role": "assistant", "content": text}


def test_hh_rlhf_single_and_multi_turn():
    row = {
        "chosen": "\n\nHuman: Name a color.\n\nAssistant: Blue.",
        "rejected": "\n\nHuman: Name a color.\n\nAssistant: I won't.",
    }
    lc = hh_rlhf_row(row, "hh row 0")
    assert lc.label == "A"
    assert lc.comparison.prompt_conversation == [U("Name a color.")]
    assert (lc.comparison.completion_A, lc.comparison.completion_B) == ([A("Blue.")], [A("I won't.")])
    multi = {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: A fruit?\n\nAssistant: Pear.",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: A fruit?\n\nAssistant: Human: no",
    }
    lc = hh_rlhf_row(multi, "hh row 1")
    assert lc.comparison.prompt_conversation == [U("Hi"), A("Hello."), U("A fruit?")]
    # "Human:" inside a reply (not after a blank line) is text, not a new turn.
    assert lc.comparison.completion_B == [A("Human: no")]
    # Transcripts that diverge before the last turn: the prompt stops at the last shared user message.
    early = {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Bye\n\nAssistant: Bye!",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Go away.\n\nHuman: Bye\n\nAssistant: Fine.",
    }
    lc = hh_rlhf_row(early, "hh row 2")
    assert lc.comparison.prompt_conversation == [U("Hi")]
    assert lc.comparison.completion_A == [A("Hello."), U("Bye"), A("Bye!")]


@pytest.mark.parametrize(
    "row, message",
    [
        ({"chosen": "\n\nHuman: q\n\nAssistant: a"}, r"missing column\(s\) \['rejected'\]"),
        (
            {"chosen": "Hello\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"},
            "'chosen': a transcript must start with",
        ),
        ({"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: a"}, "identical"),
        ({"chosen": "\n\nAssistant: a", "rejected": "\n\nAssistant: b"}, "share no user message"),
        (
            {"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q"},
            "second conversation has no",
        ),
        ({"chosen": 3, "rejected": "x"}, "expected a transcript string"),
    ],
)
def test_hh_rlhf_bad_rows(row, message):
    with pytest.raises(DataFormatError, match=rf"hh row 7.*{message}"):
        hh_rlhf_row(row, "hh row 7")


def test_ultrafeedback_schemas():
    # HuggingFaceH4/ultrafeedback_binarized: message lists that start with the user prompt.
    h4 = {
        "prompt": "Add 2 and 2.",
        "prompt_id": "x",
        "score_chosen": 8.0,
        "score_rejected": 3.0,
        "chosen": [U("Add 2 and 2."), A("4")],
        "rejected": [U("Add 2 and 2."), A("22")],
    }
    lc = ultrafeedback_row(h4, "uf row 0")
    assert (lc.label, lc.comparison.prompt_conversation) == ("A", [U("Add 2 and 2.")])
    assert (lc.comparison.completion_A, lc.comparison.completion_B) == ([A("4")], [A("22")])
    # Lists without the prompt: the `prompt` column is the prompt.
    bare = {"prompt": "Add 2 and 2.", "chosen": [A("4")], "rejected": [A("22")]}
    assert ultrafeedback_row(bare, "uf row 1") == lc
    # argilla/ultrafeedback-binarized-preferences: strings.
    argilla = {
        "source": "s",
        "instruction": "Add 2 and 2.",
        "chosen_response": "4",
        "chosen_rating": 5,
        "rejected_response": "22",
        "rejected_rating": 1,
    }
    assert ultrafeedback_row(argilla, "uf row 2") == lc
    with pytest.raises(DataFormatError, match=r"uf row 3: not an UltraFeedback row.*columns: \['prompt'\]"):
        ultrafeedback_row({"prompt": "x"}, "uf row 3")
    with pytest.raises(DataFormatError, match="uf row 4: 'chosen_response' must be a string"):
        ultrafeedback_row({**argilla, "chosen_response": None}, "uf row 4")


def test_helpsteer3_label_follows_the_sign_of_overall_preference():
    base = {
        "domain": "general",
        "language": "english",
        "context": [U("Hi")],
        "response1": "one",
        "response2": "two",
        "individual_preference": [],
    }
    labels = {p: helpsteer3_row({**base, "overall_preference": p}, "hs row").label for p in range(-3, 4)}
    # Negative: response1 (= A) is better; 0: a tie; positive: response2 (= B).
    assert labels == {-3: "A", -2: "A", -1: "A", 0: "Tie", 1: "B", 2: "B", 3: "B"}
    lc = helpsteer3_row({**base, "overall_preference": -2}, "hs row")
    assert lc.comparison.completion_A == [A("one")] and lc.comparison.prompt_conversation == [U("Hi")]
    for bad in (4, 1.5, None, True):
        with pytest.raises(DataFormatError, match="hs row 9: 'overall_preference' must be an integer"):
            helpsteer3_row({**base, "overall_preference": bad}, "hs row 9")


def test_hf_records_check_columns_and_convert_lazily():
    ds = datasets.Dataset.from_list(
        [
            {"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"},
            {"chosen": "oops", "rejected": "\n\nHuman: q\n\nAssistant: b"},
        ]
    )
    records = HFComparisonRecords(ds, "hh[train]", "hh_rlhf")
    assert len(records) == 2 and records[0][0] == "hh[train] row 0"
    with pytest.raises(DataFormatError, match=r"hh\[train\] row 1: 'chosen': a transcript must start"):
        records[1]
    with pytest.raises(DataFormatError, match=r"needs columns \['context', 'response1'"):
        HFComparisonRecords(ds, "x", "helpsteer3")
    with pytest.raises(ValueError, match="unknown row_format"):
        HFComparisonBuilder(name="x", row_format="nope")


def _save(tmp_path, splits: dict[str, list[dict]]):
    path = tmp_path / "ds"
    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(
        str(path)
    )
    return str(path)


def test_builders_read_local_copies(tmp_path, renderer):
    hs = [
        {"context": [U(f"q{k}")], "response1": f"a{k}", "response2": f"b{k}", "overall_preference": p}
        for k, p in enumerate([-1, 0, 2, -3, 0, 1])
    ]
    path = _save(tmp_path, {"train": hs, "validation": hs[:3]})
    splits = HelpSteer3ComparisonBuilder(name=path, config_name=None).load()
    assert (len(splits.train), len(splits.test)) == (6, 3)
    assert [lc.label for _, lc in splits.train] == ["A", "Tie", "B", "A", "Tie", "B"]
    no_ties = HelpSteer3ComparisonBuilder(name=path, config_name=None, keep_ties=False).load()
    assert [lc.label for _, lc in no_ties.train] == ["A", "B", "A", "B"]
    data = HelpSteer3ComparisonBuilder(name=path, config_name=None).build_dpo(
        renderer, batch_size=6, max_length=None
    )
    assert len(data.train.get_batch(0)) == 8 and data.train.stats()["data/skipped_tie"] == 2

    hh = [
        {"chosen": f"\n\nHuman: q{k}\n\nAssistant: a", "rejected": f"\n\nHuman: q{k}\n\nAssistant: b"}
        for k in range(10)
    ]
    path = _save(tmp_path / "hh", {"train": hh, "test": hh[:4]})
    splits = HHRLHFComparisonBuilder(name=path, test_size=2, max_train_rows=5, seed=1).load()
    assert (len(splits.train), len(splits.test)) == (5, 2)
    assert len({lc.comparison.prompt_conversation[0]["content"] for _, lc in splits.train}) == 5

    uf = [{"instruction": f"q{k}", "chosen_response": "a", "rejected_response": "b"} for k in range(6)]
    path = _save(tmp_path / "uf", {"train": uf})
    splits = UltraFeedbackComparisonBuilder(name=path, test_size=2).load()
    held_out = {lc.comparison.prompt_conversation[0]["content"] for _, lc in splits.test}
    assert len(held_out) == 2 and held_out.isdisjoint(
        lc.comparison.prompt_conversation[0]["content"] for _, lc in splits.train
    )


def test_registry_and_jaxcook_rows_on_the_hub_path(tmp_path, renderer):
    import json

    path = tmp_path / "rows.json"  # a .json file of jaxcook rows read through `datasets`
    path.write_text("\n".join(json.dumps(labeled_comparison_to_json(labeled(k))) for k in range(4)))
    builder = get_preference_builder(str(path), test_size=1)
    assert isinstance(builder, HFComparisonBuilder) and builder.row_format == "comparison"
    pairs = PairConverter(renderer, max_length=None).convert(builder.load().train)
    assert len(pairs) == 6
    assert isinstance(get_preference_builder("hh_rlhf"), HHRLHFComparisonBuilder)
    with pytest.raises(TypeError, match=r"has no option \['batch'\]"):
        get_preference_builder("hh_rlhf", batch=3)
