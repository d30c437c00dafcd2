"""The treasury's fixtures (an in-process chain with the real contracts), for /burns/summary."""

from tests.treasury.conftest import devnet_layout, operator, treasury_settings  # noqa: F401
