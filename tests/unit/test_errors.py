"""Every error path answers the SPEC §8 envelope with the right status (no sockets)."""

from __future__ import annotations

import pytest

from app import create_app
from app.config import config_from_dict
from app.errors import (
    GatewayError,
    InvalidAffinityIdError,
    ModelNotFoundError,
    UpstreamConnectionError,
    UpstreamTimeoutError,
    error_envelope,
)
from tests.support.configs import make_config_dict


def envelope_of(response) -> dict:
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize("error, status, error_type, code", [
    (ModelNotFoundError("m"), 400, "invalid_request_error", "model_not_found"),
    (InvalidAffinityIdError("a"), 400, "invalid_request_error", "invalid_affinity_id"),
    (UpstreamConnectionError("c"), 502, "upstream_error", "upstream_unreachable"),
    (UpstreamTimeoutError("t"), 504, "upstream_error", "upstream_timeout"),
    (GatewayError("x"), 500, "server_error", "internal_error"),
])
def test_error_classes_carry_status_type_and_code(error, status, error_type, code):
    assert error.status == status
    assert error.envelope() == error_envelope(error.message, error_type, None, code)


def test_unknown_path_is_404_envelope(client):
    error = envelope_of(response := client.get("/nope"))
    assert response.status_code == 404 and error["code"] == "not_found"


def test_wrong_method_is_405_envelope_with_allow(client):
    response = client.get("/v1/chat/completions")
    assert response.status_code == 405
    assert envelope_of(response)["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


def test_body_over_the_limit_is_413_envelope():
    config = config_from_dict(make_config_dict(server={"max_body_bytes": 1024}))
    client = create_app(config).test_client()
    response = client.post("/v1/chat/completions", data=b"x" * 2048,
                           content_type="application/json")
    assert response.status_code == 413
    assert envelope_of(response)["code"] == "request_too_large"


def test_error_answers_never_echo_the_client_authorization(client):
    response = client.post("/v1/chat/completions", data=b"{",
                           headers={"Authorization": "Bearer sk-client-secret"})
    assert response.status_code == 400
    assert "sk-client-secret" not in response.get_data(as_text=True)


def test_messages_paths_answer_errors_in_anthropic_shape(client):
    """SPEC §12: the anthropic SDK must raise its matching exception class."""
    for path, status, kind in (("/v1/messages", 400, "invalid_request_error"),
                               ("/v1/messages/count_tokens", 404, "not_found_error"),
                               ("/routing/v1/messages", 400, "invalid_request_error")):
        response = client.post(path, data=b"{nope")
        assert response.status_code == status
        assert response.get_json()["type"] == "error"
        assert response.get_json()["error"]["type"] == kind
    assert "type" not in client.post("/v1/responses", data=b"{nope").get_json()
