"""Which C2D_EXTENSIONS_PATH folders the sandbox binds into the engine's pods (security review, item 5):
none that overlaps, either way, the engine's home, the Provider key's folder, DAGSTER_HOME, the job
volumes or the local results folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from c2d_defs.sandbox.command import StartRefused
from c2d_defs.sandbox.runtimes import _extension_folders, engine_state_folders, extension_folder_problem


@pytest.fixture
def protected(tmp_path: Path) -> dict[str, str]:
    for name in ("home", "keys", "dagster", "jobs", "results", "extensions", "homework"):
        (tmp_path / name).mkdir()
    return engine_state_folders(
        home=tmp_path / "home",
        provider_key_file=tmp_path / "keys" / "provider-key",
        dagster_home=tmp_path / "dagster",
        work_dir=tmp_path / "jobs",
        results_dir=tmp_path / "results",
    )


@pytest.mark.parametrize(
    ("folder", "said"),
    [
        ("home", "holds the engine's state folder (C2D_HOME)"),
        ("home/ext", "is inside the engine's state folder (C2D_HOME)"),
        ("keys", "holds the Provider key's folder"),
        ("keys/ext", "is inside the Provider key's folder"),
        ("dagster/ext", "is inside Dagster's home (DAGSTER_HOME)"),
        ("jobs/0123456789abcdef0123456789abcdef/data/inputs", "is inside the job volumes' folder"),
        ("results", "holds the local results folder (C2D_RESULTS_DIR)"),
        ("results/ext", "is inside the local results folder"),
        ("", "holds the engine's state folder (C2D_HOME)"),  # the folder above them all
    ],
)
def test_a_folder_that_overlaps_the_engine_s_state_is_refused(
    tmp_path: Path, protected: dict[str, str], folder: str, said: str
) -> None:
    problem = extension_folder_problem(str(tmp_path / folder), protected)
    assert problem is not None and said in problem, problem


def test_the_root_and_a_symlink_into_the_job_volumes_are_refused(
    tmp_path: Path, protected: dict[str, str]
) -> None:
    assert extension_folder_problem("/", protected) is not None
    (tmp_path / "extensions" / "looks-harmless").symlink_to(tmp_path / "jobs")
    problem = extension_folder_problem(str(tmp_path / "extensions" / "looks-harmless"), protected)
    assert problem is not None and "the job volumes' folder" in problem


def test_a_folder_beside_them_is_bound(tmp_path: Path, protected: dict[str, str]) -> None:
    assert extension_folder_problem(str(tmp_path / "extensions"), protected) is None
    # A shared name prefix is no overlap: /x/homework is not inside /x/home.
    assert extension_folder_problem(str(tmp_path / "homework"), protected) is None


@pytest.mark.parametrize("inside", ["dagster", "jobs", "results", "keys"])
def test_the_sandbox_refuses_to_start_an_engine_pod_with_such_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inside: str
) -> None:
    # The folders where a deployment puts them, apart from C2D_HOME: each is protected in its own right.
    for name in ("home", "keys", "dagster", "jobs", "results", "extensions"):
        (tmp_path / name).mkdir()
    (tmp_path / inside / "ext").mkdir()
    monkeypatch.setenv("C2D_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("C2D_PROVIDER_KEY_FILE", str(tmp_path / "keys" / "provider-key"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.setenv("C2D_WORK_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv("C2D_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("C2D_EXTENSIONS_PATH", f"{tmp_path / 'extensions'},{tmp_path / inside / 'ext'}")
    with pytest.raises(StartRefused) as refused:
        _extension_folders()
    assert f"C2D_EXTENSIONS_PATH folder {tmp_path / inside / 'ext'} is inside" in str(refused.value)
    monkeypatch.setenv("C2D_EXTENSIONS_PATH", str(tmp_path / "extensions"))
    assert _extension_folders() == [str((tmp_path / "extensions").resolve())]
