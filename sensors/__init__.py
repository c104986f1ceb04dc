"""Sensors: landing, retrain and run-failure sensors (DESIGN.md) live here."""

ALL_SENSORS: list = []
