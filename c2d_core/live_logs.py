"""A pod's log while it runs: the bounds and the scrubbing of its two live copies.

The run worker follows each pod's log as it grows (c2d_defs.pod_output) and copies it to two places:
the step's compute logs, which operators read in the Dagster UI (scrubbed, bounded per step), and,
for the algorithm pod only, the job's growing algorithm log in the result store, which the Provider
streams to the job's owner (computeStreamableLogs, bounded). The complete log still comes with the
job's results.
"""

from __future__ import annotations

import re

from c2d_core.redact import strip_urls

# What one step's compute logs get of one pod's output; past it, one line says it was cut.
STEP_LOG_CAP = 1024 * 1024
# What the live copy of the algorithm log holds; the owner gets the rest with the results.
LIVE_LOG_CAP = 1024 * 1024
# Its name in the result store, beside the job's results: output names never start with a dot
# (c2d_defs.pods.publish.safe_filename), so it cannot clash with one.
LIVE_LOG_NAME = ".live-algorithm.log"
# A line longer than this is passed on in pieces, so a log without newlines still flows.
MAX_LINE = 64 * 1024

# Control characters but tab: a pod's output cannot move the cursor or forge lines in a viewer.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def truncation_line(component: str, cap: int) -> str:
    return f"[c2d] {component} pod output cut here at {cap // 1024} KiB; the results hold the full log\n"


def scrub_for_operators(text: str) -> str:
    """A pod's output as operators may read it: URLs cut out (as in every error a consumer sees,
    c2d_core.redact) and control characters escaped. Works on whole lines: a URL split across two
    reads would escape the pattern."""
    if "://" in text:
        text = strip_urls(text)
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)
