import re
from decimal import Decimal

import pytest

from moorage.api.quantity import parse_quantity
from moorage.api.spec import QUANTITY


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("300Gi", 300 * 2**30),
        ("1.5T", Decimal("1.5e12")),
        ("250m", Decimal("0.25")),
        ("42", 42),
        ("2Ki", 2048),
    ],
)
def test_quantities(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_refuses_what_the_schema_refuses() -> None:
    for bad in ("10 Gi", "Gi", "-1Gi", "1.5.0G", "1GB"):
        assert re.match(QUANTITY, bad) is None
        with pytest.raises(ValueError, match="not a quantity"):
            parse_quantity(bad)
