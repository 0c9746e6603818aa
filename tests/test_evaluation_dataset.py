"""An evaluation's params, checked at submit: inline items (a bad one is a 400 naming its
index and field), a JSONL file inside the dataset directory (read once; malformed lines kept as
invalid items; paths leaving the directory refused, symlinks and ``..`` included)."""

import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routekeeper.contract.errors import InvalidRequest
from routekeeper.jobs.evaluation.dataset import evaluation_input, item_problem


@pytest.fixture
def dataset_dir(tmp_path):
    path = tmp_path / "datasets"
    path.mkdir()
    return path


def refused(params, dataset_dir):
    with pytest.raises(InvalidRequest) as caught:
        evaluation_input(params, dataset_dir)
    assert caught.value.param is not None and caught.value.param in caught.value.message
    return caught.value


def test_inline_items_are_normalized_with_the_defaults(dataset_dir):
    got = evaluation_input(
        {
            "dataset": [
                {"prompt": "2+2?", "expected_decision": "math"},
                {"prompt": "hi", "expected_model": "small", "expected_decision": None},
                {"prompt": "\x00 nul \U0001f600", "expected_decision": "d", "expected_model": "m"},
            ]
        },
        dataset_dir,
    )
    assert got == {
        "items": [
            {"prompt": "2+2?", "expected_decision": "math"},
            {"prompt": "hi", "expected_model": "small"},
            {"prompt": "\x00 nul \U0001f600", "expected_decision": "d", "expected_model": "m"},
        ],
        "source": {"type": "inline"},
        "send_to_model": False,
        "checkpoint_every": 50,
        "concurrency": 1,
    }


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({"prompt": "x"}, "params.dataset[2]"),
        ({"prompt": "", "expected_decision": "d"}, "params.dataset[2].prompt"),
        ({"prompt": 3, "expected_decision": "d"}, "params.dataset[2].prompt"),
        ({"expected_decision": "d"}, "params.dataset[2].prompt"),
        ({"prompt": "x", "expected_decision": 7}, "params.dataset[2].expected_decision"),
        ({"prompt": "x", "expected_decision": ""}, "params.dataset[2].expected_decision"),
        ({"prompt": "x", "expected_model": "m" * 257}, "params.dataset[2].expected_model"),
        ({"prompt": "x", "expected_decision": "d", "label": 1}, "params.dataset[2].label"),
        ({"prompt": "x", "expected_decision": "\ud800"}, "params.dataset[2].expected_decision"),
        ("just text", "params.dataset[2]"),
        (None, "params.dataset[2]"),
    ],
)
def test_a_bad_inline_item_is_refused_naming_its_index_and_field(item, param, dataset_dir):
    good = {"prompt": "fine", "expected_decision": "d"}
    error = refused({"dataset": [good, good, item, good]}, dataset_dir)
    assert error.param == param
    assert error.status == 400


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({}, "params.dataset"),
        ({"dataset": [], "dataset_path": "a.jsonl"}, "params.dataset"),
        ({"dataset": []}, "params.dataset"),
        ({"dataset": {"prompt": "x"}}, "params.dataset"),
        ({"dataset": [{"prompt": "x", "expected_model": "m"}], "unknown": 1}, "params.unknown"),
        ({"dataset_path": 5}, "params.dataset_path"),
        ({"dataset_path": ""}, "params.dataset_path"),
        ({"dataset_path": "a\x00b"}, "params.dataset_path"),
        ({"dataset_path": "missing.jsonl"}, "params.dataset_path"),
    ],
)
def test_bad_params_are_refused_naming_them(params, param, dataset_dir):
    assert refused(params, dataset_dir).param == param


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("send_to_model", "yes"),
        ("send_to_model", 1),
        ("checkpoint_every", 0),
        ("checkpoint_every", 10_001),
        ("checkpoint_every", True),
        ("checkpoint_every", 2.5),
        pytest.param("checkpoint_every", 10**5000, id="checkpoint_every-huge"),
        ("concurrency", 33),
        ("concurrency", "2"),
    ],
)
def test_bad_options_are_refused(name, value, dataset_dir):
    params = {"dataset": [{"prompt": "x", "expected_model": "m"}], name: value}
    assert refused(params, dataset_dir).param == f"params.{name}"


def test_a_file_is_read_once_with_malformed_lines_kept_as_invalid_items(dataset_dir):
    lines = [
        json.dumps({"prompt": "one", "expected_decision": "a"}),
        "",
        "{not json",
        json.dumps({"prompt": "two"}),
        json.dumps(["a list"]),
        "NaN",
        json.dumps({"prompt": "three", "expected_model": "m", "extra": True}),
        "   ",
        json.dumps({"prompt": "four \x00", "expected_model": "m"}),
    ]
    (dataset_dir / "sub").mkdir()
    file = dataset_dir / "sub" / "items.jsonl"
    file.write_bytes("\n".join(lines).encode() + b"\n\xff\xfe\n")
    got = evaluation_input({"dataset_path": "sub/items.jsonl", "send_to_model": True}, dataset_dir)
    file.unlink()  # read once: the stored input is what the job runs from
    items = got["items"]
    assert items[0] == {"prompt": "one", "expected_decision": "a", "line": 1}
    assert items[1]["line"] == 3 and items[1]["invalid"].startswith("not JSON")
    assert items[2] == {
        "invalid": "an item needs expected_decision or expected_model (or both)",
        "line": 4,
    }
    assert items[3]["line"] == 5 and "array" in items[3]["invalid"]
    assert items[4]["line"] == 6 and "NaN" in items[4]["invalid"]
    assert items[5]["line"] == 7 and items[5]["invalid"].startswith("extra:")
    assert items[6] == {"prompt": "four \x00", "expected_model": "m", "line": 9}
    assert items[7] == {"invalid": "the line is not UTF-8", "line": 10}
    assert len(items) == 8
    assert got["source"]["type"] == "file" and got["send_to_model"] is True


def test_an_absolute_path_inside_the_directory_is_accepted(dataset_dir):
    file = dataset_dir / "a.jsonl"
    file.write_text(json.dumps({"prompt": "p", "expected_model": "m"}))
    assert len(evaluation_input({"dataset_path": str(file)}, dataset_dir)["items"]) == 1


def test_a_file_without_items_is_refused(dataset_dir):
    (dataset_dir / "empty.jsonl").write_text("\n  \n")
    assert refused({"dataset_path": "empty.jsonl"}, dataset_dir).param == "params.dataset_path"


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "symlinked_dir", "the_dir"])
def test_a_path_that_leaves_the_dataset_directory_is_refused(how, dataset_dir, tmp_path):
    outside = tmp_path / "secret.jsonl"
    outside.write_text(json.dumps({"prompt": "p", "expected_model": "m"}))
    if how == "dotdot":
        path = "../secret.jsonl"
    elif how == "absolute":
        path = str(outside)
    elif how == "symlink":
        os.symlink(outside, dataset_dir / "link.jsonl")
        path = "link.jsonl"
    elif how == "symlinked_dir":
        os.symlink(tmp_path, dataset_dir / "up")
        path = "up/secret.jsonl"
    else:
        path = "."
    error = refused({"dataset_path": path}, dataset_dir)
    assert error.param == "params.dataset_path"
    assert "outside the dataset directory" in error.message


item_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=5),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(
        st.sampled_from(["prompt", "expected_decision", "expected_model", "other"]),
        st.one_of(st.none(), st.text(max_size=4), st.integers()),
        max_size=4,
    ),
)


@given(item_values)
def test_an_item_is_either_good_or_refused_with_a_field(value):
    problem = item_problem(value)
    if problem is None:
        assert isinstance(value["prompt"], str) and value["prompt"].strip()
        assert value.get("expected_decision") or value.get("expected_model")
    else:
        field, message = problem
        assert field == "" or field.lstrip(".") in (
            "prompt",
            "expected_decision",
            "expected_model",
            "other",
        )
        assert message
