"""The schemathesis run behind test_openapi_fuzz.py: the embedded stack's Provider, fuzzed over the
OpenAPI document it serves, every operation.

Not collected on its own (its name does not start with `test_`): test_openapi_fuzz.py runs it with
pytest inside a network namespace that has only loopback, because the Provider fetches whatever URLs
request bodies name (fileinfo, initialize). It refuses to start anywhere else.

Figures (requests sent, answers by status, 5xx, schema failures) go to the JSON file named by
C2D_FUZZ_REPORT, for the outer test to assert on and print.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

IN_NETNS = "C2D_FUZZ_IN_NETNS"
REPORT = "C2D_FUZZ_REPORT"
# Examples per operation in the fuzzing phase (the examples and coverage phases add their own).
MAX_EXAMPLES = int(os.environ.get("C2D_FUZZ_MAX_EXAMPLES", "100"))
SEED = int(os.environ.get("C2D_FUZZ_SEED", "12"))
REQUEST_TIMEOUT = 30.0


def _interfaces() -> list[str]:
    return sorted(name for _index, name in socket.if_nameindex())


# The guarantee the whole run rests on: nothing the Provider fetches can leave this namespace.
if os.environ.get(IN_NETNS) != "1" or _interfaces() != ["lo"]:
    raise RuntimeError(
        f"openapi_fuzz_worker runs only inside a network namespace with loopback alone "
        f"(interfaces here: {_interfaces()}); run tests/integration/test_openapi_fuzz.py instead"
    )

_lock = threading.Lock()
FIGURES: dict[str, Any] = {
    "requests": 0,
    "server_errors": 0,
    "schema_failures": 0,
    "error_shape_failures": 0,
    "error_bodies_checked": 0,
    "by_status": Counter(),
    "by_operation": Counter(),
}


def _count(key: str, amount: int = 1) -> None:
    with _lock:
        FIGURES[key] += amount


def is_ocean_error(body: object) -> bool:
    """Ocean's error envelopes (provider_api.errors): `{"error": text | {resource: code}}`, with an
    optional `message`, or flask-sieve's `{"message": "Validation error", "errors": {...},
    "success": false}`."""
    if not isinstance(body, dict):
        return False
    if set(body) in ({"error"}, {"error", "message"}):
        error = body["error"]
        shaped = isinstance(error, str) or (
            isinstance(error, dict) and all(isinstance(v, str) for v in error.values())
        )
        return shaped and isinstance(body.get("message", ""), str)
    if set(body) == {"message", "errors", "success"}:
        errors = body["errors"]
        return (
            body["message"] == "Validation error"
            and body["success"] is False
            and isinstance(errors, dict)
            and bool(errors)
            and all(
                isinstance(v, str) or (isinstance(v, list) and all(isinstance(i, str) for i in v))
                for v in errors.values()
            )
        )
    return False


def ocean_error_body(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx answer is JSON in one of Ocean's envelopes."""
    if response.status_code < 400:
        return None
    _count("error_bodies_checked")
    content_type = response.headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if not content_type.startswith("application/json") or not is_ocean_error(body):
        _count("error_shape_failures")
        raise AssertionError(
            f"{response.status_code} is not in Ocean's error shape: {content_type} {response.content[:300]!r}"
        )
    return None


def counted_schema_conformance(ctx: Any, response: Any, case: Any) -> bool | None:
    try:
        return response_schema_conformance(ctx, response, case)
    except Exception:
        _count("schema_failures")
        raise


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    counted_schema_conformance,
    unsupported_method,
    ocean_error_body,
]


def _start_stack() -> tuple[Path, str]:
    """The embedded stack (anvil, Dagster webserver and daemon, the Provider under uvicorn), all on this
    namespace's loopback. Started at import: schemathesis builds one test per operation when it collects
    this module, from the document the running Provider serves (its lazy, fixture-based loader does not
    work with pytest 9)."""
    from c2d_cli import stack

    home = Path(tempfile.mkdtemp(prefix="c2d-fuzz-")) / ".c2d"
    running, _ = stack.up(home, port=stack._free_port(), provider_port=stack._free_port())
    atexit.register(_stop_stack, home)
    return home, running.provider_url


def _stop_stack(home: Path) -> None:
    from c2d_cli import stack

    stack.down(home)
    shutil.rmtree(home.parent, ignore_errors=True)


def _write_figures() -> None:
    report = os.environ.get(REPORT)
    if report:
        Path(report).write_text(json.dumps(FIGURES, indent=2))


HOME, PROVIDER_URL = _start_stack()
atexit.register(_write_figures)  # runs before _stop_stack (last registered, first run)

schema = schemathesis.openapi.from_url(
    f"{PROVIDER_URL}/openapi.json",
    config=schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
            "phases": {"stateful": {"enabled": False}},
        }
    ),
)


@schema.parametrize()
def test_operation(case: Any) -> None:
    response = case.call(timeout=REQUEST_TIMEOUT)
    _count("requests")
    with _lock:
        FIGURES["by_status"][str(response.status_code)] += 1
        FIGURES["by_operation"][case.operation.label] += 1
    if response.status_code >= 500:
        _count("server_errors")
    case.validate_response(response, checks=CHECKS)
