"""Series files attacked again: defects found in a review, each test failing on the code before its fix."""

from __future__ import annotations

import os
import threading
import time

import pytest

from energy_core import MeasureOptions
from energy_core.carbon.charges import Charges
from energy_core.carbon.factor import Series
from energy_core.carbon.run_factors import RunFactors


def test_a_file_without_its_header_row_is_refused_not_its_first_row_dropped(tmp_path) -> None:
    # The first line was skipped as the header whatever it held: a file written without one lost its
    # first value silently (here the night's 380 g/kWh, replaced by the midday 140 from 00:00 on).
    path = tmp_path / "grid.csv"
    path.write_text("2026-06-01T00:00:00+00:00,380\n2026-06-01T10:00:00+00:00,140\n")
    with pytest.raises(ValueError, match=r"carbon_intensity_series: line 1 of .* is a row of data.*header row"):
        MeasureOptions(carbon_intensity_series=path)
    path.write_text("time,g_per_kwh\n2026-06-01T00:00:00+00:00,380\n")  # with its header: taken
    assert len(Series(path, "carbon_intensity_series", "g/kWh").times) == 1


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00", "1066-10-14T09:00Z"])
def test_a_moment_no_grid_data_can_have_is_refused_at_construction_not_at_fit_start(tmp_path, stamp) -> None:
    # Such a row was accepted, then the source text of the value in force (its moment in local
    # time) raised "year 0 is out of range" from the fit start (and on the sampler thread).
    path = tmp_path / "grid.csv"
    path.write_text(f"time,g\n{stamp},100\n")
    with pytest.raises(ValueError, match=r"carbon_intensity_series: line 2 of .* is not between 1970 and 2200"):
        MeasureOptions(carbon_intensity_series=path)


def test_every_moment_a_series_may_hold_can_be_charged(tmp_path) -> None:
    path = tmp_path / "grid.csv"
    path.write_text("time,g\n1970-01-01T00:00:00+00:00,100\n2199-12-31T23:59:59+00:00,200\n")
    charges = Charges(RunFactors(Series(path, "carbon_intensity_series", "g/kWh"), None, pue=1.0, currency="EUR"))
    charges.restart(time.time(), reach_s=2.0)
    charges.take(3.6e6, time.time() + 1)
    assert charges.co2e_kg == pytest.approx(0.1)


def test_a_symbolic_link_is_not_followed_and_its_target_never_shown(tmp_path) -> None:
    # Followed: a link planted where a series is read made the error quote the first line of
    # whatever it pointed to (a key, a password hash).
    secret = tmp_path / "secret"
    secret.write_text("header\nroot:$6$hash:19000:0\n")
    link = tmp_path / "grid.csv"
    os.symlink(secret, link)
    with pytest.raises(ValueError, match="price_per_kwh: .* is a symbolic link") as raised:
        MeasureOptions(price_per_kwh=str(link))
    assert "hash" not in str(raised.value)
    good = tmp_path / "good.csv"
    good.write_text("time,g\n2026-06-01T00:00:00+00:00,100\n")
    os.symlink(good, tmp_path / "good-link.csv")
    with pytest.raises(ValueError, match="carbon_intensity_series: .* is a symbolic link"):
        MeasureOptions(carbon_intensity_series=tmp_path / "good-link.csv")


def test_a_file_swapped_for_a_fifo_after_the_check_is_not_waited_on(tmp_path, monkeypatch) -> None:
    # The check (`os.path.isfile`) and the open were two looks at the path: a FIFO put there between
    # them blocked the constructor for good.
    fifo = tmp_path / "grid.csv"
    os.mkfifo(fifo)
    regular = tmp_path / "regular"
    regular.write_text("")
    looked = os.lstat(regular)
    monkeypatch.setattr(os.path, "isfile", lambda path: True)  # the path was a file when looked at
    monkeypatch.setattr(os, "lstat", lambda path, **kw: looked)
    started = time.monotonic()
    with pytest.raises(ValueError, match="carbon_intensity_series: .* is not a regular file"):
        # a timer opens the FIFO's other end after 3 s, so that the old code fails instead of hanging
        def unblock() -> None:
            time.sleep(3)
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                os.close(fd)
            except OSError:
                pass

        threading.Thread(target=unblock, daemon=True).start()
        MeasureOptions(carbon_intensity_series=fifo)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("row", "what"),
    [
        ("2026-06-01T00:00:00+02:00,0,21", "price_per_kwh"),
        ("2026-06-01T00:00:00+02:00,1,050", "carbon_intensity_series"),
    ],
)
def test_a_decimal_comma_or_thousands_separator_is_refused_not_read_as_another_number(tmp_path, row, what) -> None:
    # A row longer than its header was cut to its first two fields: a price of 0,21 EUR/kWh was
    # charged as 0 (no cost at all), an intensity of 1,050 g/kWh as 1.
    path = tmp_path / "series.csv"
    path.write_text(f"time,value\n{row}\n")
    with pytest.raises(ValueError, match=rf"{what}: line 2 of .* has 3 fields, its header 2"):
        MeasureOptions(**{what: str(path)})  # type: ignore[arg-type]
    path.write_text("time,value,note\n2026-06-01T00:00:00+02:00,0.21,windy\n")  # a third column, named: taken
    assert Series(path, what, "per kWh", high=1e6).values.tolist() == [0.21]
    path.write_text("time,value\n2026-06-01T00:00:00+02:00,0.21,\n2026-06-01T01:00:00+02:00,0.25, \n")
    assert Series(path, what, "per kWh", high=1e6).values.tolist() == [0.21, 0.25]  # trailing commas: nothing more
