"""lineage-forge engine: pure Python over polars frames, paths and torch modules.

Nothing in this package imports dagster; every algorithm here can be used and
tested without an orchestrator. The Dagster code location (assets/, resources/,
jobs/, sensors/) is a thin layer over these modules.
"""
