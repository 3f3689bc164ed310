"""Copy the job state of compute runs written before it was hidden under its current tag names.

Runs launched before the upgrade carry their state as visible `c2d/<name>` tags (c2d_core.engine
`LEGACY_NAMES`); today's readers look for `.dagster/c2d/<name>`. Every reader of job state reads a run
through `engine.current_tags`, so an old job reads right at once, but a tag *filter* (the runs of an
agreement) only matches the stored names. So the stage watchdog, at each tick until it is done, copies
the old values under the new names (Dagster's storage has no call that deletes a tag: old runs keep
their old tags as well, and new runs never carry them). Progress is kept in run storage's key-value
store, so a restarted daemon goes on where it stopped and a finished upgrade costs one read per tick.
"""

from __future__ import annotations

import dagster as dg

from c2d_core import engine

DONE_KEY = "c2d/tag_upgrade/done"
CURSOR_KEY = "c2d/tag_upgrade/cursor"  # the last run looked at, newest first
PAGE = 200


def upgrade_legacy_tags(instance: dg.DagsterInstance, max_runs: int = 2000) -> tuple[int, bool]:
    """Look at up to `max_runs` compute runs not yet looked at, newest first, and copy their old-named
    tags; returns (runs changed, whether every run has been looked at)."""
    storage = instance.run_storage
    state = storage.get_cursor_values({DONE_KEY, CURSOR_KEY})
    if state.get(DONE_KEY) == "1":
        return 0, True
    cursor = state.get(CURSOR_KEY) or None
    changed = seen = 0
    while seen < max_runs:
        runs = instance.get_runs(
            filters=dg.RunsFilter(job_name=engine.JOB_NAME), cursor=cursor, limit=min(PAGE, max_runs - seen)
        )
        if not runs:
            storage.set_cursor_values({DONE_KEY: "1"})
            return changed, True
        for run in runs:
            missing = engine.legacy_upgrade(run.tags)
            if missing:
                instance.add_run_tags(run.run_id, missing)
                changed += 1
        seen += len(runs)
        cursor = runs[-1].run_id
        storage.set_cursor_values({CURSOR_KEY: cursor})
    return changed, False
