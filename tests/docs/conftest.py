"""Fixtures the docs' sessions need: anvil for the anchoring walkthrough."""

from tests.anchoring.conftest import anvil_url  # noqa: F401 -- a fixture, used by name
