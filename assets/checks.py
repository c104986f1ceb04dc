"""Asset checks (Great Expectations suites and model gates), registered in definitions.py."""

ALL_CHECKS: list = []
