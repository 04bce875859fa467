"""Values of the ground floor taking what providers send."""

from __future__ import annotations

import pytest

from cardmill import Usage


@pytest.mark.parametrize(
    "reported",
    [-5, -1e12, float("nan"), float("inf"), "lots", None, [3], 10**12, 1e300, True],
)
def test_token_counts_that_make_no_sense_read_as_zero(reported: object) -> None:
    usage = Usage(input_tokens=reported, output_tokens=reported)
    assert usage.input_tokens == usage.output_tokens == 0
    assert usage.rate_limited_input_tokens == usage.input_tokens


def test_token_counts_as_numbers_or_digits_are_kept() -> None:
    assert Usage(1200, 30.0, "7", 0) == Usage(1200, 30, 7, 0)
    assert Usage(limit_input_tokens=-3).limit_input_tokens == 0
