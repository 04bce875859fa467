"""TOML files a user writes (recipes, prices) are bounded before they are read."""

from __future__ import annotations

from pathlib import Path

import pytest

from cardmill import InputError, PriceTable


@pytest.mark.parametrize(
    "value",
    [
        "[" * 5000 + "]" * 5000,
        "{a = " * 3000 + "1" + "}" * 3000,
        "[" * 17 + "]" * 17,
    ],
)
def test_a_deeply_nested_prices_file_is_one_line_naming_the_file(
    tmp_path: Path, value: str
) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(f'[models."m"]\ninput = 1\noutput = {value}\n')
    with pytest.raises(InputError) as info:
        PriceTable.from_toml(prices)
    assert str(info.value) == f"{prices}: tables and arrays nested more than 16 levels deep"
