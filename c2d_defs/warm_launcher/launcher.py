"""WarmRunLauncher: Dagster's run launcher for the embedded default that hands each run to the warm run
worker (c2d_defs/warm_launcher/worker.py) over its Unix socket, instead of a code server's new process.

Configured in the instance file like any launcher:

    run_launcher:
      module: c2d_defs.warm_launcher
      class: WarmRunLauncher
      config: {socket_path: /short/path.sock, connect_wait_seconds: 5}   # both optional

A worker that is down makes `launch_run` raise DagsterUserCodeUnreachableError, which the queued run
coordinator answers by putting the run back in the queue (`max_user_code_failure_retries`), and fails
it with Dagster's "failed to reach the user code server" once those are spent. A fork the worker
cannot make is a DagsterLaunchFailedError: the run fails at once, with the reason on it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import dagster._check as check
from dagster import Field, Float, StringSource
from dagster._config.config_schema import UserConfigSchema
from dagster._core.errors import DagsterLaunchFailedError, DagsterUserCodeUnreachableError
from dagster._core.events import EngineEventData
from dagster._core.launcher.base import (
    CheckRunHealthResult,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
)
from dagster._core.storage.dagster_run import DagsterRun
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData, serialize_value

from c2d_defs.warm_launcher import protocol

# Tag with the pid of the run's process in the worker (hidden from the runs list like the job's state,
# c2d_core.engine; the fault tests kill it).
WORKER_PID_TAG = ".dagster/c2d/warm_worker_pid"


class WarmRunLauncher(RunLauncher, ConfigurableClass):
    def __init__(
        self,
        socket_path: str | None = None,
        connect_wait_seconds: float = 5.0,
        inst_data: ConfigurableClassData | None = None,
    ) -> None:
        self._inst_data = inst_data
        self._socket_path = Path(socket_path) if socket_path else None
        # A worker starting (or started again) is not listening yet: wait that out. A worker
        # re-executing itself (code change, reload) keeps its listener, so a request then just waits.
        self._connect_wait = connect_wait_seconds
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return {
            "socket_path": Field(StringSource, is_required=False),
            "connect_wait_seconds": Field(Float, is_required=False, default_value=5.0),
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> Self:
        return cls(inst_data=inst_data, **config_value)

    @property
    def socket_path(self) -> Path:
        if self._socket_path is not None:
            return self._socket_path
        root = self._instance.root_directory if self.has_instance else None
        return protocol.default_socket_path(root)

    def _request(self, message: dict[str, Any], wait: float | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + (self._connect_wait if wait is None else wait)
        while True:
            try:
                return protocol.request(self.socket_path, message)
            except protocol.WorkerUnreachable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    def launch_run(self, context: LaunchRunContext) -> None:
        run = check.inst(context.dagster_run, DagsterRun)
        if run.job_code_origin is None:
            raise DagsterLaunchFailedError(f"run {run.run_id} has no code origin to execute")
        args = ExecuteRunArgs(
            job_origin=run.job_code_origin, run_id=run.run_id, instance_ref=self._instance.get_ref()
        )
        try:
            answer = self._request({"cmd": "launch", "run_id": run.run_id, "args": serialize_value(args)})
        except protocol.WorkerUnreachable as error:
            raise DagsterUserCodeUnreachableError(
                f"the warm run worker is not running ({error}); `c2d dev up` starts it again"
            ) from error
        except (OSError, ValueError) as error:
            raise DagsterLaunchFailedError(
                f"the warm run worker did not take run {run.run_id}: {error}"
            ) from error
        if not answer.get("ok"):
            reason = answer.get("error", "no reason given")
            raise DagsterLaunchFailedError(f"the warm run worker could not start run {run.run_id}: {reason}")
        pid = int(answer["pid"])
        self._instance.add_run_tags(run.run_id, {WORKER_PID_TAG: str(pid)})
        self._instance.report_engine_event(
            f"Launched run {run.run_id} in the warm run worker (process {pid}).",
            run,
            EngineEventData.in_process(pid),
            cls=self.__class__,
        )

    def terminate(self, run_id: str) -> bool:
        check.str_param(run_id, "run_id")
        if not self.has_instance:
            return False
        run = self._instance.get_run_by_id(run_id)
        if not run or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        try:
            answer = self._request({"cmd": "terminate", "run_id": run_id})
        except (OSError, ValueError) as error:
            self._instance.report_engine_event(
                f"Unable to reach the warm run worker to terminate the run: {error}", run, cls=self.__class__
            )
            return False
        if not answer.get("ok"):
            self._instance.report_engine_event(
                f"The warm run worker did not terminate the run: {answer.get('error')}",
                run,
                cls=self.__class__,
            )
            return False
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        try:
            answer = self._request({"cmd": "health", "run_id": run.run_id})
        except protocol.WorkerUnreachable as error:
            # Its runs died with it (PDEATHSIG): nothing runs this one.
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, f"the warm run worker is not running ({error})")
        except (OSError, ValueError) as error:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, f"the warm run worker did not answer: {error}")
        try:
            status = WorkerStatus[str(answer.get("status"))]
        except KeyError:
            status = WorkerStatus.UNKNOWN
        return CheckRunHealthResult(status, str(answer.get("message", "")))
