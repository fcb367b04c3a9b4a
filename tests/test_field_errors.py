"""Field errors in words for a person filling in a form, never pydantic's own wording."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from signaling.api.endpoint import field_errors


class Form(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=3, max_length=8)]
    tags: Annotated[list[str], Field(min_length=1, max_length=2)] = ["a"]
    age: Annotated[int, Field(ge=13, le=120)] = 20
    kind: Literal["a", "b"] = "a"
    when: Annotated[datetime, Field(strict=False)] = datetime(2030, 1, 1)


@pytest.mark.parametrize(("body", "field", "words"), [
    ({}, "name", "This is required."),
    ({"name": "ab"}, "name", "Use at least 3 characters."),
    ({"name": "abcdefghi"}, "name", "Use at most 8 characters."),
    ({"name": "abc", "tags": []}, "tags", "Give at least 1."),
    ({"name": "abc", "tags": ["a", "b", "c"]}, "tags", "Give at most 2."),
    ({"name": "abc", "age": 5}, "age", "Use 13 or more."),
    ({"name": "abc", "age": 500}, "age", "Use 120 or less."),
    ({"name": "abc", "age": "old"}, "age", "This should be a whole number."),
    ({"name": 7}, "name", "This should be text."),
    ({"name": "abc", "kind": "c"}, "kind", "Choose one of 'a' or 'b'."),
    ({"name": "abc", "extra": 1}, "extra", "This field is not known here."),
    ({"name": "abc", "when": ""}, "when", "Give a date and time, like 2027-01-31T18:00:00Z."),
    ({"name": "abc", "when": "tomorrow"}, "when", "Give a date and time, like 2027-01-31T18:00:00Z."),
])
def test_messages_are_plain_words(body: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Form.model_validate(body)
    errors = {e["field"]: e["message"] for e in field_errors(raised.value)}
    assert errors[field] == words
    assert not any("validation" in m or "Value should" in m or "Input should" in m for m in errors.values()), errors
