"""The Provider's routers, one module per area; `routers()` lists them for `main.create_app`."""

from __future__ import annotations

from fastapi import APIRouter


def routers() -> list[APIRouter]:
    from provider_api.routes import access, compute, encryption, files, logs, root

    return [root.router, encryption.router, files.router, compute.router, logs.router, access.router]
