"""Helpers shared by several test modules (builders, fixtures' data); no tests here."""
