"""The HTTP API against its own OpenAPI document, with schemathesis: generated requests (a bounded number per
operation) never get a 5xx, and every answer matches the schema — including the error answers it lists."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.api.app import create_app
from tests.conftest import book_through_api

pytestmark = pytest.mark.timeout(900)
EXAMPLES_PER_OPERATION = 30
# No 5xx, and every answer (status, content type, body) as the document says. Not "every schema-valid
# request is accepted": the schema cannot say that "Mars/Olympus" is no timezone, and a 422 for it is right.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_no_request_the_schema_allows_gets_a_server_error_or_an_answer_outside_the_schema(
    use_database: str, make_clinic: Any, clock: Any, api: Any
) -> None:
    _, key = make_clinic()
    book_through_api(api, key, starts_at=clock.now)
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    counted = 0
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            nonlocal counted
            counted += 1
            case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, checks=CHECKS)

        check()
    print(f"schemathesis: {counted} generated requests over {len(operations)} operations")
