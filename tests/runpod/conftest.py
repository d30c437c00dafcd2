"""The `runpod_standin` fixtures moved to tests/conftest.py so tests/idle and tests/jobs share
them; they are documented there."""
