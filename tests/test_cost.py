"""The price table: the default model is priced, prompt-length bands, prices files."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pytest

from cardmill import InputError, Usage
from cardmill._cost import DEFAULT_PRICES, Price, PriceTable, cost_of
from cardmill.providers import DEFAULT_ANTHROPIC_MODEL


def test_the_default_model_has_a_price() -> None:
    assert DEFAULT_PRICES.price_for(DEFAULT_ANTHROPIC_MODEL) is not None


def test_the_price_table_is_dated_sourced_and_well_named() -> None:
    # Facts of our own table only: the SDK's list of models changes from release to
    # release (a price stays useful for a model the SDK stopped listing).
    assert DEFAULT_PRICES.as_of
    assert DEFAULT_PRICES.source.startswith("https://")
    for model in DEFAULT_PRICES.prices:
        assert re.fullmatch(r"claude-[a-z]+(-\d+)+", model), model


def test_a_long_prompt_prices_the_whole_request_at_its_band() -> None:
    price = DEFAULT_PRICES.price_for("claude-haiku-5-5")
    assert price is not None
    short = cost_of(Usage(100_000, 1000), price)
    long = cost_of(Usage(100_001, 1000), price)
    assert short == pytest.approx((100_000 * 0.10 + 1000 * 0.50) / 1e6)
    assert long == pytest.approx((100_001 * 0.50 + 1000 * 2.50) / 1e6)
    assert cost_of(Usage(100_001, 1000), price, batch=True) == pytest.approx(long / 2)
    # Cache reads count toward the prompt's length.
    assert cost_of(Usage(50_000, 0, cache_read_input_tokens=60_000), price) == pytest.approx(
        (50_000 * 0.50 + 60_000 * 0.05) / 1e6
    )


def test_a_long_prompt_in_a_batch_pays_its_bands_batch_share(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        '[models."m"]\ninput = 1\noutput = 1\nbatch_share = 0.5\nlong_prompt_above = 10\n'
        '[models."m".long_prompt]\ninput = 2\noutput = 2\nbatch_share = 0.8\n'
    )
    price = PriceTable.from_toml(path).price_for("m")
    assert price is not None
    assert price.long_prompt is not None
    assert price.long_prompt.batch_share == 0.8
    # A short prompt pays the model's share, a long one its band's.
    assert cost_of(Usage(10, 0), price, batch=True) == pytest.approx(10 * 1 * 0.5 / 1e6)
    assert cost_of(Usage(11, 0), price, batch=True) == pytest.approx(11 * 2 * 0.8 / 1e6)
    # Without a share of its own, the band pays the model's.
    path.write_text(
        '[models."m"]\ninput = 1\noutput = 1\nbatch_share = 0.25\nlong_prompt_above = 10\n'
        '[models."m".long_prompt]\ninput = 2\noutput = 2\n'
    )
    price = PriceTable.from_toml(path).price_for("m")
    assert price is not None
    assert cost_of(Usage(11, 0), price, batch=True) == pytest.approx(11 * 2 * 0.25 / 1e6)


def test_a_band_needs_both_halves() -> None:
    with pytest.raises(InputError, match="go together"):
        Price(1, 1, 1, 1, long_prompt_above=10)


def test_from_toml_merges_over_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        '[models."claude-haiku-5-5"]\ninput = 9\noutput = 9\ncache_write = 9\n'
        "cache_read = 9\nbatch_share = 1\nlong_prompt_above = 5\n"
        '[models."claude-haiku-5-5".long_prompt]\ninput = 20\noutput = 20\n'
    )
    table = PriceTable.from_toml(path)
    price = table.price_for("claude-haiku-5-5")
    assert price is not None
    assert (price.input, price.batch_share, price.long_prompt_above) == (9, 1, 5)
    assert price.long_prompt == Price(20, 20, 25, 2, batch_share=1)
    assert table.price_for("claude-opus-4-5") == DEFAULT_PRICES.price_for("claude-opus-4-5")
    alone = PriceTable.from_toml(path, base=PriceTable({}))
    assert set(alone.prices) == {"claude-haiku-5-5"}


@pytest.mark.parametrize("where", ["missing", "directory", "binary", "huge"])
def test_unreadable_prices_files_are_one_line_errors(tmp_path: Path, where: str) -> None:
    path = tmp_path / "p.toml"
    if where == "directory":
        path.mkdir()
    elif where == "binary":
        path.write_bytes(b"\xff\xfe\x00")
    elif where == "huge":
        path.write_text("# x\n" * 300_000)
    with pytest.raises(InputError) as caught:
        PriceTable.from_toml(path)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_fifo_as_the_prices_file_is_refused_without_waiting_for_a_writer(
    tmp_path: Path,
) -> None:
    # Opening a FIFO for reading blocks until something writes to it: nothing ever will.
    path = tmp_path / "prices.toml"
    os.mkfifo(path)
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            PriceTable.from_toml(path)
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():
        # Unblock the stuck open so the thread ends, then fail.
        with open(path, "wb"):
            pass
        reader.join(timeout=10)
        pytest.fail("reading a FIFO as the prices file waited for a writer")
    assert len(outcome) == 1
    assert isinstance(outcome[0], InputError)
    assert str(path) in str(outcome[0])
    assert "not a regular file" in str(outcome[0])
