"""Fuzzing the service with schemathesis, from the service's own OpenAPI schema (/openapi.json).

Bounded: a fixed number of generated requests per operation and mode (valid and invalid by the schema),
derandomized, so the run is reproducible and stops by itself; sent to the real server on 127.0.0.1.
The property checked is the one that matters for every request: no 5xx, whatever the body, query,
headers or path hold, and no traceback in the server log. Driven through hypothesis directly
(schemathesis's pytest plugin does not run under pytest 9).
"""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from .support import WAIT_S

EXAMPLES = 10  # per operation and mode (19 operations x 2 modes); ~200 requests in all


def fuzz(operation, mode: GenerationMode, log, sent: list[tuple[str, int]]) -> None:
    """Send up to EXAMPLES generated requests for one operation; each must get no 5xx and log no traceback."""

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case) -> None:
        logged = len(log.lines)
        response = case.call(timeout=WAIT_S)
        sent.append((f"{operation.label} {mode.value}", response.status_code))
        case.validate_response(response, checks=[not_a_server_error])
        new = log.lines[logged:]
        assert not [line for line in new if "Traceback" in line or line.startswith(("ERROR", "CRITICAL"))], (
            new
        )

    try:
        check()
    except Unsatisfiable:  # no invalid request exists for an operation without parameters or body
        assert mode is GenerationMode.NEGATIVE, operation.label


def test_no_generated_request_gets_a_server_error(served):
    service, _, log = served
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json", timeout=WAIT_S)
    operations = [result.ok() for result in schema.get_all_operations()]
    sent: list[tuple[str, int]] = []
    for operation in operations:
        for mode in GenerationMode:
            fuzz(operation, mode, log, sent)
    statuses = sorted({status for _, status in sent})
    print(f"\nschemathesis sent {len(sent)} requests over {len(operations)} operations; statuses {statuses}")
    assert len(operations) >= 19 and len(sent) >= 100 and all(status < 500 for status in statuses)
    assert httpx.get(service.url + "/readyz", timeout=WAIT_S).status_code == 200, "still serving"
