"""Shared pytest fixtures; each group lives in its own module, registered here as a plugin."""

# tests/ has no __init__.py, so pytest puts it on sys.path and the fixture modules import by name.
pytest_plugins = [
    "fixtures_http",
    "fixtures_chain",
    "fixtures_stack",
    "fixtures_s3",
    "fixtures_ipfs",
    "fixtures_postgres",
]
