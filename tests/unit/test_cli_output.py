"""What the commands make of the Provider's answers: refusals turned into a next step, a job's phases
and outcome, result file names, image references and trust entries."""

import pytest
import typer

from c2d_cli.cli_output import explain_provider_error
from c2d_cli.commands_publish import parse_image, parse_trust_spec, trust_spec, without_secrets
from c2d_cli.compute.outcome import failure_of
from c2d_cli.compute.progress import phase_rows
from c2d_cli.consumer import safe_name
from c2d_cli.provider_client import ProviderError

DID = "did:op:" + "ab" * 32
HEX = "cd" * 32


def test_a_raw_algorithm_refusal_says_what_to_do() -> None:
    error = explain_provider_error(
        ProviderError(400, {"error": {"dataset": "no_raw_algo_allowed"}}), {"dataset": f"the dataset {DID}"}
    )
    assert error.message.startswith(f"the dataset {DID} does not allow raw algorithms")
    assert "[dataset: no_raw_algo_allowed]" in error.message
    assert "ask the publisher to trust your algorithm, or publish it" in error.hint


def test_other_refusal_shapes() -> None:
    unknown = explain_provider_error(ProviderError(400, {"error": {"datasets[1]": "something_new"}}))
    assert "the datasets[1] was refused (something_new)" in unknown.message
    fields = explain_provider_error(
        ProviderError(400, {"message": "Validation error", "errors": {"nonce": ["too old"]}})
    )
    assert fields.message == "the Provider refused the request's fields: nonce: too old"
    env = explain_provider_error(ProviderError(400, {"error": "Compute environment does not exist"}))
    assert "c2d envs" in env.hint
    backend = explain_provider_error(ProviderError(503, {"error": "compute backend unavailable: down"}))
    assert "(503)" in backend.message and "try again later" in backend.hint


def job(status: int, **extra):
    base = {
        "jobId": "j" * 32,
        "status": status,
        "statusText": "x",
        "dateCreated": "100.0",
        "dateFinished": None,
        "phases": {
            "configure": {"started": None, "finished": None},
            "algorithm": {"started": None, "finished": None},
            "publish": {"started": None, "finished": None},
        },
        "terminationDetails": {"exitCode": None, "OOMKilled": False, "reason": None},
    }
    return {**base, **extra}


def times(configure=(None, None), algorithm=(None, None), publish=(None, None)):
    return {
        name: {"started": edges[0], "finished": edges[1]}
        for name, edges in (("configure", configure), ("algorithm", algorithm), ("publish", publish))
    }


def states(rows):
    return [(row.name, row.state, None if row.elapsed is None else round(row.elapsed, 1)) for row in rows]


def test_phases_of_a_running_job() -> None:
    running = job(40, phases=times(configure=("102", "104.5"), algorithm=("105", None)))
    assert states(phase_rows(running, now=108.0)) == [
        ("queued", "done", 2.0),
        ("provisioning", "done", 2.5),
        ("running", "active", 3.0),
        ("publishing", "waiting", None),
    ]


def test_phases_of_a_finished_job_and_its_failures() -> None:
    done = job(
        70,
        dateFinished="110",
        phases=times(configure=("101", "102"), algorithm=("102", "106"), publish=("106", "109")),
    )
    assert [row.state for row in phase_rows(done, now=500.0)] == ["done"] * 4
    assert failure_of(done) is None
    crashed = {**done, "statusDetail": "algorithm exited with code 1"}
    crashed["terminationDetails"] = {"exitCode": 1, "OOMKilled": False, "reason": "Error"}
    assert failure_of(crashed) == "algorithm exited with code 1 (its logs were published)"
    assert [row.state for row in phase_rows(crashed, now=500.0)][2] == "failed"
    fetch_failed = job(31, dateFinished="104", statusDetail="HTTP 404", phases=times(configure=("101", None)))
    assert failure_of(fetch_failed) == "status 31 x: HTTP 404"
    assert [row.state for row in phase_rows(fetch_failed, now=500.0)] == [
        "done",
        "failed",
        "skipped",
        "skipped",
    ]


def test_a_stopped_job_is_not_a_failure() -> None:
    stopped = job(
        70, dateFinished="110", stopreq=1, phases=times(configure=("101", "102"), algorithm=("102", "103"))
    )
    stopped["terminationDetails"] = {"exitCode": 137, "OOMKilled": False, "reason": "Stopped"}
    assert failure_of(stopped) is None


def test_phases_fall_back_to_what_the_client_saw() -> None:
    from c2d_cli.compute.progress import PhaseClock

    clock = PhaseClock()
    bare = {**job(20), "phases": None}  # a Provider that sends no phase times
    clock.observe(bare, 103.0)
    rows = phase_rows(bare, now=104.0, clock=clock)
    assert states(rows)[:2] == [("queued", "done", 3.0), ("provisioning", "active", 1.0)]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("summary.json", "summary.json"),
        ("../../etc/passwd", "passwd"),
        (".hidden", "result-3"),
        ("", "result-3"),
    ],
)
def test_result_names_stay_in_the_folder(name: str, expected: str) -> None:
    assert safe_name(name, 3, set()) == expected


def test_result_names_do_not_collide() -> None:
    taken: set[str] = set()
    assert [safe_name("out.txt", i, taken) for i in range(2)] == ["out.txt", "1-out.txt"]


@pytest.mark.parametrize(
    ("image", "tag", "checksum", "expected"),
    [
        ("python:3.11-slim", None, None, ("python", "3.11-slim", None)),
        ("python", None, None, ("python", "latest", None)),
        ("python", "3.11", f"sha256:{HEX}", ("python", "3.11", f"sha256:{HEX}")),
        (f"python:3.11@sha256:{HEX}", None, None, ("python", "3.11", f"sha256:{HEX}")),
        ("registry.local:5000/team/algo:1.2", None, None, ("registry.local:5000/team/algo", "1.2", None)),
        ("registry.local:5000/team/algo", None, None, ("registry.local:5000/team/algo", "latest", None)),
    ],
)
def test_image_references(image, tag, checksum, expected) -> None:
    assert parse_image(image, tag, checksum) == expected


@pytest.mark.parametrize(
    ("image", "tag", "checksum"),
    [
        ("python:3.11", "3.12", None),
        ("python", None, "sha256:XYZ"),
        (f"python@sha256:{HEX}", None, f"sha256:{'e' * 64}"),
    ],
)
def test_conflicting_or_malformed_images_are_refused(image, tag, checksum) -> None:
    with pytest.raises(typer.BadParameter):
        parse_image(image, tag, checksum)


def test_trust_specs() -> None:
    entry = {"did": DID, "filesChecksum": HEX * 2, "containerSectionChecksum": HEX}
    assert parse_trust_spec(trust_spec(entry)) == entry
    assert parse_trust_spec(DID.upper().replace("DID:OP:", "did:op:")) == DID
    assert parse_trust_spec("*") == "*"
    with pytest.raises(typer.BadParameter):
        parse_trust_spec(f"{DID}:{HEX[:10]}:{HEX}")


def test_the_ddo_is_shown_without_its_encrypted_files() -> None:
    ddo = {"id": DID, "services": [{"id": "compute", "files": "0x" + "9f" * 300, "timeout": 0}]}
    shown = without_secrets(ddo)
    assert shown["services"][0]["files"].startswith("<encrypted for the Provider")
    assert "9f" * 10 not in str(shown) and ddo["services"][0]["files"].startswith("0x9f")


def test_services_are_found_at_their_index_in_the_ddo() -> None:
    from c2d_cli.commands_publish import ChainAsset

    ddo = {"services": ["junk", {"id": "dl", "type": "access"}, {"id": "c2d", "type": "compute"}]}
    asset = ChainAsset(DID, "0x", "0x", 0, 8996, "", 3, 1, 1, [], ddo)
    assert asset.service(None, compute=True) == ("c2d", 2)
    assert asset.service(None, compute=False) == ("dl", 1)
    assert asset.service("dl", compute=True) == ("dl", 1)
    assert asset.service("missing", compute=True) is None
