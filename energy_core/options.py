"""The measurement arguments every monitor and budget takes, validated once.

`MeasureArgs` is the keyword-argument list (for signatures: ``**measure: Unpack[MeasureArgs]``,
which IDEs, type checkers and LightningCLI read); `MeasureOptions` is the same list
validated and normalised, and what the core works from. A test keeps the two in step.

Examples:
    >>> options = MeasureOptions(country="FRA", pue=1.1)
    >>> options.as_args()["country"]
    'FRA'
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal
from numbers import Real
from typing import Any, TypedDict

from energy_core import checks
from energy_core.carbon.electricity_maps import ZONE, ElectricityMaps
from energy_core.carbon.factor import Factor, Fixed, Series
from energy_core.carbon.location import CarbonIntensity, resolve_intensity
from energy_core.devices import parse_devices
from energy_core.notices import Notice
from energy_core.sampling.sampler import check_interval
from energy_core.units import MAX_PRICE_PER_KWH, MAX_PUE, MAX_TDP_W


class MeasureArgs(TypedDict, total=False):
    """Keyword arguments of every monitor and budget (see `MeasureOptions` for each)."""

    devices: str | Sequence[str]
    sample_interval_s: float
    country: str | None
    region: str | None
    cloud_provider: str | None
    cloud_region: str | None
    carbon_intensity_g_per_kwh: float | None
    pue: float
    record_path: str | os.PathLike[str] | None
    cpu_tdp_w: float | None
    carbon_intensity_series: str | os.PathLike[str] | None
    electricity_maps_zone: str | None
    price_per_kwh: float | str | os.PathLike[str] | None
    currency: str


def _price(value: Any) -> float | str | None:
    """``price_per_kwh``: a number >= 0, or the path of a price series."""
    if value is None or isinstance(value, (Real, Decimal)):  # a bool is refused there, as a number
        what = f"a number in [0, {MAX_PRICE_PER_KWH:g}] or a CSV series path"
        return checks.number("price_per_kwh", value, low=0, high=MAX_PRICE_PER_KWH, optional=True, what=what)
    return checks.file_path("price_per_kwh", value)


@dataclass(frozen=True)
class MeasureOptions:
    """What to measure and how to turn it into CO2e; validated at construction.

    Args:
        devices: ``"auto"`` (every GPU visible to the process, the CPU package through
            RAPL or else an estimate, DRAM through RAPL where present) or a list drawn
            from ``"gpu"``, ``"cpu"``, ``"dram"``.
        sample_interval_s: Seconds between hardware reads on the background thread, in
            [0.001, 60].
        country: ISO 3166 alpha-3 code for the grid intensity, e.g. ``"FRA"``.
        region: Sub-national region (USA, CAN, CHN, SWE, NOR, FIN), with ``country``.
        cloud_provider: Cloud provider, e.g. ``"gcp"``, with ``cloud_region``.
        cloud_region: Cloud region, e.g. ``"europe-west9"``.
        carbon_intensity_g_per_kwh: Use this grid intensity (g/kWh, in [0, 2000]) instead of a lookup.
        pue: Power usage effectiveness of the data centre (in [1, 10]), applied to CO2e and cost.
        record_path: Append a JSON-lines run record to this file (written by rank 0).
        cpu_tdp_w: The CPU socket's TDP in W (in (0, 1000]), for the CPU estimate used where RAPL
            cannot be read (instead of codecarbon's table, or 4 W per thread for an unknown model).
        carbon_intensity_series: A CSV file of the grid intensity over time (header row;
            ISO 8601 timestamp with its UTC offset, g/kWh; each value holds until the next):
            CO2e is charged reading by reading at the value in force. Parsed once, here.
        electricity_maps_zone: The live intensity of this Electricity Maps zone (e.g.
            ``"FR"``), refreshed every 15 minutes off the training thread; the token comes
            from ``$ELECTRICITYMAPS_API_KEY``. Falls back to the location lookup.
        price_per_kwh: Electricity price per kWh (PUE applied), a number in [0, 1e6] or a CSV
            series like the intensity's: ``cost/total`` is logged.
        currency: The price's currency, an ISO 4217 code (``"EUR"``).

    Raises:
        TypeError: naming the argument, for a value of the wrong type (a bool is not a number).
        ValueError: naming the argument and the allowed range, for any invalid value
            (including an unknown country, region or cloud region).
    """

    devices: str | tuple[str, ...] = "auto"
    sample_interval_s: float = 0.1
    country: str | None = None
    region: str | None = None
    cloud_provider: str | None = None
    cloud_region: str | None = None
    carbon_intensity_g_per_kwh: float | None = None
    pue: float = 1.0
    record_path: str | None = None
    cpu_tdp_w: float | None = None
    carbon_intensity_series: str | None = None
    electricity_maps_zone: str | None = None
    price_per_kwh: float | str | None = None
    currency: str = "EUR"
    _carbon_series: Series | None = field(default=None, init=False, repr=False, compare=False)
    _price_series: Series | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def names(cls) -> list[str]:
        """The arguments' names, in order."""
        return [f.name for f in fields(cls) if f.init]

    @classmethod
    def of(cls, owner: str, kwargs: dict[str, Any]) -> MeasureOptions:
        """The options from a constructor's keyword arguments; an unknown name is a TypeError
        that says whose argument it is not."""
        unknown = sorted(set(kwargs) - set(cls.names()))
        if unknown:
            allowed = ", ".join(cls.names())
            raise TypeError(
                f"{owner} got unexpected keyword arguments {unknown}; its measurement arguments are {allowed}"
            )
        return cls(**kwargs)

    def __post_init__(self) -> None:
        kinds, explicit = parse_devices(self.devices)
        checked = {
            "devices": kinds if explicit else "auto",
            "sample_interval_s": check_interval(self.sample_interval_s),
            "pue": checks.number("pue", self.pue, low=1, high=MAX_PUE),
            "record_path": checks.file_path("record_path", self.record_path),
            "cpu_tdp_w": checks.number(
                "cpu_tdp_w", self.cpu_tdp_w, low=0, high=MAX_TDP_W, low_open=True, optional=True, unit=" W"
            ),
            "carbon_intensity_series": checks.file_path("carbon_intensity_series", self.carbon_intensity_series),
            "electricity_maps_zone": checks.text(
                "electricity_maps_zone", self.electricity_maps_zone, what="an Electricity Maps zone such as 'FR'"
            ),  # fmt: skip
            "price_per_kwh": _price(self.price_per_kwh),
            "currency": checks.text("currency", self.currency, optional=False, what="an ISO 4217 code such as 'EUR'"),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        zone = self.electricity_maps_zone
        if zone is not None and not ZONE.fullmatch(zone):
            raise ValueError(f"electricity_maps_zone must be an Electricity Maps zone such as 'FR' or 'US-CAL-CISO' "
                             f"(letters, digits, '-' and '_'), got {zone!r}")  # fmt: skip
        if not re.fullmatch(r"[A-Z]{3}", self.currency):
            raise ValueError(f"currency must be an ISO 4217 code such as 'EUR', got {self.currency!r}")
        chosen = [n for n in ("carbon_intensity_g_per_kwh", "carbon_intensity_series", "electricity_maps_zone")
                  if getattr(self, n) is not None]  # fmt: skip
        if len(chosen) > 1:
            raise ValueError(f"give one of carbon_intensity_g_per_kwh, carbon_intensity_series and "
                             f"electricity_maps_zone, not {' and '.join(chosen)}")  # fmt: skip
        self.location_intensity()  # checks the location and intensity arguments now, not at fit start
        # A series file is parsed once, now (its errors are the constructor's); each run charges
        # with a fresh copy of it (`carbon_factor`, `price_factor`).
        if self.carbon_intensity_series is not None:
            carbon = Series(self.carbon_intensity_series, "carbon_intensity_series", "g/kWh")
            object.__setattr__(self, "_carbon_series", carbon)
        if isinstance(self.price_per_kwh, str):
            price = Series(self.price_per_kwh, "price_per_kwh", f"{self.currency}/kWh", high=MAX_PRICE_PER_KWH)
            object.__setattr__(self, "_price_series", price)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The device kinds to measure."""
        return parse_devices(self.devices)[0]

    @property
    def explicit(self) -> bool:
        """Whether the user named the device kinds."""
        return self.devices != "auto"

    def location_intensity(self) -> tuple[CarbonIntensity, list[Notice]]:
        """The fixed grid intensity these options select (a given figure, or the location's
        lookup), and notices about the choice; `carbon_factor` is the intensity over time."""
        return resolve_intensity(
            self.country, self.region, self.cloud_provider, self.cloud_region, self.carbon_intensity_g_per_kwh
        )

    def location_notices(self) -> list[Notice]:
        """What to say about the location's intensity, where it prices the run: a series prices every
        moment itself (a zone falls back on the location when the API does not answer)."""
        return [] if self._carbon_series is not None else self.location_intensity()[1]

    def carbon_factor(self) -> Factor:
        """The grid intensity over time these options select (see `energy_core.carbon.factor`)."""
        located, _ = self.location_intensity()
        fixed = Fixed(located.g_per_kwh, located.source)
        if self._carbon_series is not None:
            return self._carbon_series.fresh()
        if self.electricity_maps_zone is not None:
            return ElectricityMaps(self.electricity_maps_zone, fixed)
        return fixed

    def price_factor(self) -> Factor | None:
        """The electricity price over time, or None without ``price_per_kwh``."""
        if self.price_per_kwh is None:
            return None
        if isinstance(self.price_per_kwh, float):
            return Fixed(self.price_per_kwh, f"price_per_kwh={self.price_per_kwh:g} {self.currency}")
        assert self._price_series is not None  # a str price is a series path, parsed at construction
        return self._price_series.fresh()

    def as_args(self) -> dict[str, Any]:
        """The options as JSON-safe keyword arguments (HF stores them to re-create a callback)."""
        args = {name: getattr(self, name) for name in self.names()}
        args["devices"] = self.devices if isinstance(self.devices, str) else list(self.devices)
        return args
