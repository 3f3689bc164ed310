"""The built-in output stage `leak_filter`: refuses outputs that hold a verbatim copy of the inputs.

The check itself is c2d_core.leak_filter, run by the pod program c2d_defs.pods.leak_filter in a pod
with the job's /data read-only and no network; see docs/leak-filter.md for what it catches and what it
cannot. Settings (environments.yaml `outputStages: [{name: leak_filter, settings: {...}}]`) are
`LeakFilterConfig`'s fields: window_bytes, max_output_share, max_decoded_bytes, max_expansion_ratio,
max_depth, max_archive_members, min_whole_file_bytes, min_run_information.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from c2d_core.leak_filter import LeakFilterConfig
from c2d_core.settings import MIB
from c2d_defs.output_stages import OutputStage, StageContext, StageVerdict, verdict_from_pod
from c2d_defs.pod_runner import PodResult, PodSpec
from c2d_defs.pods import leak_filter as pod_program
from c2d_defs.stage_pods import POD_PROGRAM_MEMORY

# Fingerprints cost about 0.4 byte per input byte and one output's decoded parts are held in memory
# up to max_decoded_bytes: the pod gets room for both above the pod programs' usual ceiling.
FINGERPRINT_BYTES_PER_INPUT_BYTE = 0.5


class LeakFilterStage(OutputStage[LeakFilterConfig]):
    name = "leak_filter"
    description = (
        "Refuse the job's outputs when they hold a verbatim copy of an input longer than the "
        "environment's window (also through gzip, zip, tar, base64, hex and JSON strings)."
    )

    def parse_settings(self, raw: Mapping[str, Any]) -> LeakFilterConfig:
        return LeakFilterConfig.from_mapping(raw)

    def pod(self, ctx: StageContext, settings: LeakFilterConfig) -> PodSpec:
        memory = POD_PROGRAM_MEMORY + settings.max_decoded_bytes
        memory += int(ctx.environment.disk_bytes * FINGERPRINT_BYTES_PER_INPUT_BYTE)
        return ctx.pod_spec(
            command=["python", "-m", "c2d_defs.pods.leak_filter"],
            pod_env={
                pod_program.CONFIG_ENV: json.dumps(settings.as_dict()),
                pod_program.REPORT_ENV: pod_program.DEFAULT_REPORT_PATH,
            },
            # Inputs and outputs are memory-mapped, so the address space must hold them too.
            memory_bytes=memory + 2 * ctx.environment.disk_bytes + 64 * MIB,
        )

    def judge(self, ctx: StageContext, settings: LeakFilterConfig, result: PodResult) -> StageVerdict:
        verdict = verdict_from_pod(self.name, result)
        try:
            summary = json.loads(result.termination_message or "{}")
        except ValueError:
            summary = {}
        if isinstance(summary, dict):
            extra = {
                key: summary[key]
                for key in ("outputs", "bytes_scanned", "seconds")
                if isinstance(summary.get(key), int | float)
            }
            extra["window_bytes"] = settings.window_bytes
            return StageVerdict(verdict.accepted, verdict.reason, {**verdict.metadata, **extra})
        return verdict


LEAK_FILTER = LeakFilterStage()
