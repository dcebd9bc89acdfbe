from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        dest="update_golden",
        help="rewrite the golden files under tests/golden from the current output",
    )
