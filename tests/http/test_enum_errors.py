"""A value outside a Literal field's choices is refused naming the values that are accepted."""

from __future__ import annotations

import pytest
import requests

from tests.http.conftest import SERVED_NAME


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("response_format", "url", "response_format must be one of: b64_json; got 'url'"),
        ("output_format", "gif", "output_format must be one of: jpeg, png, webp; got 'gif'"),
    ],
)
def test_image_generation_enum_errors_list_the_allowed_values(
    url: str, field: str, value: str, message: str
) -> None:
    body = {"model": SERVED_NAME, "prompt": "x", field: value}
    response = requests.post(f"{url}/v1/images/generations", json=body, timeout=30)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert message in error["message"]
    assert error["param"] == field
