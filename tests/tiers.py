"""The test tiers: tests/<tier>/ gives every test there the marker <tier> (tests/conftest.py)."""

TIERS = ("unit", "integration", "cli")
