"""The page shows real burns: the treasury's fixtures (devnet layout, settings, operator)."""

from tests.treasury.conftest import devnet_layout, operator, treasury_settings  # noqa: F401
