"""Property-based and fuzz tests: hypothesis on the preprocessing and the JSON API, schemathesis
on the app's own OpenAPI schema. Whatever comes in, the answer is a result or a 4xx, never a crash."""

from __future__ import annotations

import json

import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tinymnist.inference.preprocess import ImageError, preprocess
from tinymnist.serving.app import create_app

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(arrays(np.float32, st.tuples(st.integers(1, 90), st.integers(1, 90)),
              elements=st.floats(0, 1, width=32)))
def test_preprocess_returns_an_mnist_field_or_a_clear_error(grey):
    try:
        out = preprocess(grey)
    except ImageError as exc:
        assert str(exc)
        return
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() == pytest.approx(1.0)
    ys, xs = np.nonzero(out)
    assert max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 <= 20  # the longer side at most MNIST's 20 px


@FUZZ
@given(st.integers(0, 60), st.integers(0, 60), st.integers(2, 30), st.integers(2, 30), st.booleans())
def test_a_block_of_ink_anywhere_lands_centred(top, left, height, width, light_paper):
    grey = np.zeros((100, 100), np.float32)
    grey[top:top + height, left:left + width] = 1.0
    if light_paper:
        grey = 1.0 - grey
    out = preprocess(grey)
    rows, cols = np.indices(out.shape)
    assert abs((rows * out).sum() / out.sum() - 14.0) <= 1.0
    assert abs((cols * out).sum() / out.sum() - 14.0) <= 1.0


@pytest.fixture(scope="module")
def app(trained_model):
    return create_app(*trained_model, max_body_bytes=256 * 1024)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda children: st.lists(children, max_size=30)
                           | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=900)


@FUZZ
@given(payload=st.one_of(json_values, st.fixed_dictionaries({"pixels": json_values}),
                         st.fixed_dictionaries({"pixels": st.lists(st.lists(st.floats(), min_size=28, max_size=28),
                                                                   min_size=28, max_size=28)})))
def test_json_api_answers_anything_with_a_result_or_a_4xx(client, payload):
    body = json.dumps(payload, allow_nan=True)
    response = client.post("/api/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.text
    assert ("label" in response.json()) if response.status_code == 200 else ("error" in response.json())


@FUZZ
@given(st.binary(max_size=2048))
def test_uploads_of_random_bytes_are_4xx(client, data):
    response = client.post("/api/predict", files={"file": ("x.png", data)})
    assert 400 <= response.status_code < 500 and "error" in response.json()


OPERATIONS = [("/api/predict", "POST"), ("/api/health", "GET"), ("/api/model", "GET")]


@pytest.mark.parametrize("path, method", OPERATIONS)
def test_openapi_schema_fuzz_finds_no_server_error(app, path, method):
    """Requests generated from the app's own schema (valid and invalid bodies) never get a 5xx."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    assert {p for p, _ in OPERATIONS} <= set(schema.keys())  # the fuzz list covers every documented path
    operation = schema[path][method]

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def run(case):
        response = case.call()
        assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])

    run()
