"""The admin API fuzzed from its own OpenAPI schema with schemathesis: no server errors, every status and body as
the schema documents them, each answer within a bound.

The operator behind the app is the in-memory one of the unit tests: the fuzzer posts engine actions at random,
which against a real operator would stop and restart the engine for minutes. The app, its validation, auth and
middleware are the real ones. Run with the token (to reach the handlers) and without it (auth answers only).
"""

import time

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from vms_admin.app import create_app

TOKEN = "fuzz-token"
ANSWER_BOUND_S = 2.0


def ready_app():
    from unit.test_admin_api import InMemoryOperator

    operator = InMemoryOperator(TOKEN)
    operator.become_ready()
    return create_app(operator)


schema = schemathesis.openapi.from_asgi("/openapi.json", ready_app())
fuzz = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {TOKEN}"}, {}], ids=["with token", "without token"])
@schema.parametrize()
@fuzz
def test_every_operation_answers_as_documented_within_the_bound(case, headers) -> None:
    started = time.perf_counter()
    response = case.call_and_validate(headers=headers)
    assert time.perf_counter() - started < ANSWER_BOUND_S
    assert TOKEN not in response.text
