"""Example output stage, part 3 of 3: the `sensitive_columns` stage and a code location that runs it.

The code location is the engine's own (c2d_defs.definitions: resources, sensors, the other jobs) with
`compute_job` rebuilt from the default stages plus this one, so nothing of the engine is copied:

    compute_job = build_compute_job(default_stages(*DEFAULT_OUTPUT_STAGES, SENSITIVE_COLUMNS))

Point workspace.yaml (or the chart's user deployment) at `sensitive_location:defs` and keep the
location name `c2d`; an environment then turns the stage on in environments.yaml:

    outputStages:
      - name: sensitive_columns
        settings: {columns: [email]}      # optional: refused in every dataset of this environment
        deadline: 120

`C2D_EXTENSIONS=sensitive_columns` (with `C2D_EXTENSIONS_PATH` pointing at this folder, or the package
installed) makes the Provider check those settings too, and C2D_EXTENSIONS_PATH is what lets the
stage's pod import its program here. See docs/extending.md, "Output stages".
"""

from __future__ import annotations

import json

import dagster as dg
from sensitive_columns import (
    STAGE_NAME,
    DeclaredColumnsError,
    SensitiveColumnsSettings,
    declared_columns,
)
from sensitive_columns_pod import CASE_SENSITIVE_ENV, COLUMNS_ENV

from c2d_defs.definitions import defs as engine_defs
from c2d_defs.jobs.compute import DEFAULT_OUTPUT_STAGES, build_compute_job, default_stages
from c2d_defs.output_stages import OutputStage, StageContext, StageVerdict
from c2d_defs.pod_runner import PodSpec


class SensitiveColumnsStage(OutputStage[SensitiveColumnsSettings]):
    name = STAGE_NAME
    description = (
        "Refuse the job's outputs when a CSV or TSV output has a column that the dataset's DDO "
        "(metadata.additionalInformation.sensitiveColumns) or the environment marks as sensitive."
    )
    settings_model = SensitiveColumnsSettings

    def run(self, ctx: StageContext, settings: SensitiveColumnsSettings) -> StageVerdict:
        # The names come from the workflow's DDOs (public metadata, never the job's outputs), so the
        # op may read them here; the outputs themselves are only ever read in the pod.
        try:
            columns = declared_columns(ctx.workflow, settings)
        except DeclaredColumnsError as error:
            return StageVerdict.reject(f"{error}, so the outputs were not checked")
        if not columns:
            ctx.log.info("sensitive_columns: no column is marked sensitive, no pod to run")
            return StageVerdict.accept("no column is marked sensitive", columns=0)
        verdict = self.judge(ctx, settings, ctx.run_pod(self.pod(ctx, settings)))
        return StageVerdict(verdict.accepted, verdict.reason, {**verdict.metadata, "columns": len(columns)})

    def pod(self, ctx: StageContext, settings: SensitiveColumnsSettings) -> PodSpec:
        env = {
            COLUMNS_ENV: json.dumps(declared_columns(ctx.workflow, settings)),
            CASE_SENSITIVE_ENV: "true" if settings.case_sensitive else "false",
        }
        # Locally the program is imported from C2D_EXTENSIONS_PATH (the sandbox binds those folders
        # read-only into the engine's pods); an image with the package installed needs no path.
        if ctx.settings.extensions_path:
            env["PYTHONPATH"] = ":".join(ctx.settings.extensions_path)
        return ctx.pod_spec(command=["python", "-m", "sensitive_columns_pod"], pod_env=env)


SENSITIVE_COLUMNS = SensitiveColumnsStage()

compute_job = build_compute_job(default_stages(*DEFAULT_OUTPUT_STAGES, SENSITIVE_COLUMNS))

# The engine's code location with this compute_job in place of the default one.
defs = dg.Definitions(
    jobs=[compute_job, *(job for job in engine_defs.jobs or [] if job.name != compute_job.name)],
    resources=engine_defs.resources,
    sensors=engine_defs.sensors,
    schedules=engine_defs.schedules,
)
