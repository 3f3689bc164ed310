"""The OpenAPI document the Provider serves: every operation's inputs and Ocean-shaped answers declared,
no 422 (the app answers 400), the models in step with the runtime ones, and `Allow` naming every
method of a path. The fuzz run over this document is tests/integration/test_openapi_fuzz.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from c2d_core import engine
from provider_api import schemas
from provider_api.jobs import JobRecord, ocean_job_json
from provider_api.main import create_app
from provider_api.settings import ProviderSettings

COMPUTE = "/api/services/compute"
ERROR_BODY_STATUSES = {"400", "403", "404", "409", "410", "416", "503"}


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("C2D_HOME", str(tmp_path / "home"))
    settings = ProviderSettings(nonce_db_url=f"sqlite:///{tmp_path / 'nonces.db'}")
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def document(client: TestClient) -> dict[str, Any]:
    return client.get("/openapi.json").json()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield method.upper(), path, operation


def validator(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A validator for `schema` whose `#/components/...` references resolve in the served document."""
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    registry: Registry = Registry().with_resource("urn:doc", DRAFT202012.create_resource(document))
    rooted = json.loads(json.dumps(schema).replace('"#/components/', '"urn:doc#/components/'))
    return jsonschema.Draft202012Validator(rooted, registry=registry)


def component(document: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    return validator(document, {"$ref": f"#/components/schemas/{name}"})


def response_validator(document: dict[str, Any], method: str, path: str, status: int) -> Any:
    answer = document["paths"][path][method.lower()]["responses"][str(status)]
    return validator(document, answer["content"]["application/json"]["schema"])


def test_no_operation_lists_422_and_the_schema_of_it_is_gone(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        assert "422" not in operation["responses"], (method, path)
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert "422" not in json.dumps(document["paths"])


def test_every_operation_declares_what_it_reads(document: dict[str, Any]) -> None:
    found = list(operations(document))
    assert len(found) == 16
    for method, path, operation in found:
        if path == "/":
            continue
        assert operation.get("parameters") or operation.get("requestBody"), (method, path)
        assert "400" in operation["responses"], (method, path)
    parameters = {
        (method, path): {p["name"]: p for p in operation.get("parameters", [])}
        for method, path, operation in found
    }
    status = parameters[("GET", COMPUTE)]
    assert status["consumerAddress"]["required"] is True and status["jobId"]["required"] is False
    result = parameters[("GET", "/api/services/computeResult")]
    assert {name for name, p in result.items() if p["required"]} == {
        "consumerAddress",
        "jobId",
        "index",
        "nonce",
        "signature",
    }
    assert result["index"]["schema"] == {"type": "integer", "minimum": 0}
    assert result["Range"]["in"] == "header"
    download = parameters[("GET", "/api/services/download")]
    assert download["fileIndex"]["required"] is True
    live = parameters[("GET", "/api/services/computeStreamableLogs")]
    assert {name for name, p in live.items() if p["required"]} == {
        "consumerAddress",
        "jobId",
        "nonce",
        "signature",
    }


def test_stop_and_delete_take_their_fields_from_the_query_or_a_json_body(document: dict[str, Any]) -> None:
    for method in ("put", "delete"):
        operation = document["paths"][COMPUTE][method]
        names = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
        # Either form alone is complete, so neither is required by itself.
        assert not any(p["required"] for p in operation["parameters"])
        assert operation["requestBody"]["required"] is False
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        model = document["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
        assert names == set(model["properties"])
        assert set(model["required"]) == {"consumerAddress", "jobId", "nonce", "signature"}


def test_error_answers_are_ocean_envelopes(document: dict[str, Any]) -> None:
    schemas_ = document["components"]["schemas"]
    assert set(schemas_["OceanError"]["required"]) == {"error"}
    assert set(schemas_["FieldErrors"]["required"]) == {"message", "errors", "success"}
    for method, path, operation in operations(document):
        for status, answer in operation["responses"].items():
            if status not in ERROR_BODY_STATUSES:
                continue
            schema = answer["content"]["application/json"]["schema"]
            refs = [item["$ref"] for item in schema.get("anyOf", [schema])]
            expected = ["OceanError", "FieldErrors"] if status == "400" else ["OceanError"]
            assert [ref.rsplit("/", 1)[1] for ref in refs] == expected, (method, path, status)


def test_the_bodies_the_app_sends_match_the_declared_ones(
    client: TestClient, document: dict[str, Any]
) -> None:
    missing = client.get("/api/services/nonce")
    assert missing.status_code == 400
    response_validator(document, "GET", "/api/services/nonce", 400).validate(missing.json())
    bad_json = client.post(
        "/api/services/decrypt", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert bad_json.status_code == 400 and "error" in bad_json.json()
    response_validator(document, "POST", "/api/services/decrypt", 400).validate(bad_json.json())
    fields = client.post("/api/services/decrypt", json={})
    assert fields.status_code == 400 and "errors" in fields.json()
    component(document, "FieldErrors").validate(fields.json())
    # The declared 400 refuses FastAPI's own shape, so a leak of it would be caught by the fuzzer.
    with pytest.raises(jsonschema.ValidationError):
        response_validator(document, "GET", "/api/services/nonce", 400).validate({"detail": []})
    container = {
        "entrypoint": "python $ALGO",
        "image": "python",
        "tag": "3.11",
        "checksum": "sha256:" + "a" * 64,
    }
    echoed = client.post("/api/services/validateContainer", json=container)
    assert echoed.status_code == 200
    response_validator(document, "POST", "/api/services/validateContainer", 200).validate(echoed.json())


def job_records() -> list[JobRecord]:
    base = {engine.JOB_ID: "a" * 32, engine.OWNER: "0x" + "ab" * 20, engine.STATUS: "1"}
    results = [{"filename": "out.csv", "filesize": 12, "type": "output", "index": 0}]
    finished = {
        **base,
        engine.STATUS: "70",
        engine.DATE_FINISHED: "120.5",
        engine.RESULTS: json.dumps(results),
        engine.OUTPUT_REQUESTED: "1",
    }
    return [
        JobRecord(run_id="r1", run_status="QUEUED", tags=base, created=1.0),
        JobRecord(run_id="r2", run_status="SUCCESS", tags=finished, created=1.0, started=2.0, ended=130.0),
        JobRecord(run_id="r3", run_status="STARTED", tags={**base, engine.STATUS: "40"}, created=1.0),
    ]


def test_the_job_json_matches_the_compute_job_model(document: dict[str, Any]) -> None:
    declared = response_validator(document, "GET", COMPUTE, 200)
    jobs = [{**ocean_job_json(record), "queuePosition": None} for record in job_records()]
    assert jobs[1]["results"] != "" and "resultsAsset" in jobs[1]
    declared.validate(jobs)
    every_key = set(document["components"]["schemas"]["ComputeJob"]["properties"])
    for job in jobs:
        assert set(job) <= every_key
    for method in ("post", "put", "delete"):
        schema = document["paths"][COMPUTE][method]["responses"]["200"]["content"]["application/json"][
            "schema"
        ]
        assert schema["items"] == {"$ref": "#/components/schemas/ComputeJob"}


def _wire_fields(model: type[BaseModel]) -> tuple[set[str], set[str]]:
    """(every field, the required ones) of a runtime model, by the names clients send."""
    names = {info.alias or name for name, info in model.model_fields.items()}
    required = {info.alias or name for name, info in model.model_fields.items() if info.is_required()}
    return names, required


@pytest.mark.parametrize(
    "runtime", [schemas.ComputeStartBody, schemas.InitializeComputeBody, schemas.DecryptBody]
)
def test_documented_bodies_are_in_step_with_the_models_that_parse_them(
    document: dict[str, Any], runtime: type[BaseModel]
) -> None:
    # One model parses each body and documents it: the served schema must still name its wire fields.
    names, required = _wire_fields(runtime)
    declared = document["components"]["schemas"][runtime.__name__]
    documented_names, documented_required = set(declared["properties"]), set(declared.get("required", []))
    assert names <= documented_names
    assert required == documented_required


def test_options_and_405_name_every_method_of_the_path(client: TestClient) -> None:
    every = "DELETE, GET, OPTIONS, POST, PUT"
    options = client.options(COMPUTE)
    assert (options.status_code, options.headers["allow"]) == (204, every)
    refused = client.patch(COMPUTE)
    assert (refused.status_code, refused.headers["allow"]) == (405, every)
    assert refused.json() == {"error": "Method Not Allowed"}
    assert client.options("/api/services/encrypt").headers["allow"] == "OPTIONS, POST"
    assert client.head("/api/services/nonce").headers["allow"] == "GET, OPTIONS"
    assert client.options("/api/services/nope").status_code == 404
    # A CORS preflight is still the CORS middleware's answer.
    preflight = client.options(
        COMPUTE, headers={"Origin": "https://market.example", "Access-Control-Request-Method": "PUT"}
    )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "*"


def test_schemathesis_reads_every_operation_of_the_document(document: dict[str, Any]) -> None:
    import schemathesis

    loaded = schemathesis.openapi.from_dict(document)
    labels = {result.ok().label for result in loaded.get_all_operations()}
    assert len(labels) == 16 and "PUT /api/services/compute" in labels
