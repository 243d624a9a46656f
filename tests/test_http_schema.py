"""schemathesis against the served OpenAPI document: every operation, generated valid and invalid
requests with an admin key, all of its checks (status codes, content types and bodies as documented,
auth not ignored, unsupported methods answered 405 with Allow, ...). A few examples per operation keep
it well under a minute."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from serve_fixtures import make_bundle
from serve_http import files, png, served

from distilshot.serve.api import create_app
from distilshot.serve.classifier import FewShotClassifier
from distilshot.serve.security import ApiKeys, Security

ADMIN_KEY = "admin-key-for-schemathesis-0123"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
# Schema-valid data the API may still refuse as documented: a class name against the store's rules
# (no separators, control characters, ...) and a store file that is not one, both 400. Images, which
# the schema can only call binary, are made real below, so a 422 for valid data stays a failure.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401", "403", "404", "409"]}
        }
    }
)


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    root = tmp_path_factory.mktemp("schema")
    security = Security(keys=ApiKeys.parse(f"admin:{ADMIN_KEY}\nread:read-key-0123456789abc", "test"))
    with (
        FewShotClassifier(make_bundle(root / "bundle"), root / "s.db") as classifier,
        served(create_app(classifier, security=security)) as url,
    ):
        for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
            r = httpx.post(
                f"{url}/v1/classes", headers=AUTH, data={"name": name}, files=files(("a.png", png(colour)))
            )
            assert r.status_code == 201, r.text
        yield schemathesis.openapi.from_url(f"{url}/v1/openapi.json", config=CONFIG)


def real_images(case: schemathesis.Case, colours: list[tuple[int, int, int]]) -> schemathesis.Case:
    """`case` with its generated image bytes replaced by PNGs of `colours`."""
    if isinstance(case.body, dict) and isinstance(case.body.get("images"), list):
        count = len(case.body["images"])
        case.body["images"] = [png(colours[i % len(colours)]) for i in range(count)]
    return case


COLOURS = st.lists(st.tuples(*[st.integers(0, 255)] * 3), min_size=1, max_size=3)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_keeps_to_its_openapi_document(api_schema, mode):
    # strategies per operation rather than @schema.parametrize: its lazy fixture loader reads a pytest
    # internal (Function._nodeid) that pytest 9 no longer has
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == 12
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not (
            operation.query or operation.path_parameters or operation.body
        ):
            continue  # nothing in the request to make invalid (GET /v1/health, /v1/model, ...)
        strategy = operation.as_strategy(generation_mode=mode)
        if mode is GenerationMode.POSITIVE:
            strategy = st.builds(real_images, strategy, COLOURS)

        @given(case=strategy)
        @settings(max_examples=8, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def keeps_to_it(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=AUTH)

        keeps_to_it()
