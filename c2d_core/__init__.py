"""Shared domain of Compute-to-Data: workflow and environment models, status codes, results.

Nothing here imports Dagster or FastAPI, so the Provider, the engine and the pods all use it.
"""
