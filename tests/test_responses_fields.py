"""Every create field of the installed openai SDK's Responses API is sorted into honoured,
forwarded, ignored or refused, and the README's table says the same as the code."""

import typing
from pathlib import Path

from openai.types.responses import response_create_params

from routekeeper.router.services.responses_request import (
    CREATE_FIELDS,
    parse_request,
    responses_request_schema,
)

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_create_field_of_the_sdk_is_sorted():
    fields = set(typing.get_type_hints(response_create_params.ResponseCreateParamsBase))
    fields |= {"stream"}
    assert fields - set(CREATE_FIELDS) == set()


def test_the_readme_table_is_the_code():
    text = README.read_text()
    for name, (handling, why) in CREATE_FIELDS.items():
        assert f"| `{name}` | {handling.value} | {why} |" in text, name


def test_the_published_schema_allows_a_stream():
    # stream: true is honoured (the Responses event stream), so the OpenAPI body schema must
    # not restrict it to false.
    assert parse_request({"model": "m", "input": "x", "stream": True}).stream
    stream = responses_request_schema()["properties"]["stream"]
    assert "boolean" in stream["type"]
    assert True in stream.get("enum", [True])


def test_the_published_schema_names_every_content_part_the_code_takes():
    # An assistant message may carry a refusal part (it becomes text for the model).
    assert parse_request(
        {
            "model": "m",
            "input": [{"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}],
        }
    ).items
    items = responses_request_schema()["properties"]["input"]["anyOf"][1]["items"]["anyOf"]
    item = items[0]
    assert [i["properties"]["type"]["enum"] for i in items] == [
        ["message"],
        ["function_call"],
        ["function_call_output"],
    ]
    parts = item["properties"]["content"]["anyOf"][1]["items"]["anyOf"]
    kinds = {kind for part in parts for kind in part["properties"]["type"]["enum"]}
    assert kinds == {"input_text", "output_text", "input_image", "refusal"}
