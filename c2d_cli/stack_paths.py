"""Where the local stack keeps its files under its home (`.c2d/`)."""

# Not `logs/`: Dagster owns $DAGSTER_HOME/logs and moves whatever is in it to `.logs_queue/`.
STACK_LOGS = "stack-logs"
