"""Forecast: where a time shift's intensity forecast comes from.

* Given (a CSV series path, as for ``carbon_intensity_series``, or a list of
  ``(datetime, g_per_kwh)``): that curve.
* Not given: the intensity the run is charged with. A recorded series is its own forecast
  (a perfect one); a live Electricity Maps zone gives its forecast endpoint, fetched on a
  thread of its own (never the training thread) and again every `REFRESH_S`; a fixed figure
  has nothing to shift on.

When there is none, `Forecast.missing` says why, and the run starts at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from energy_core.carbon.electricity_maps import ElectricityMaps, fetch_forecast
from energy_core.carbon.factor import Factor, Series
from energy_core.shift.intensity import Intensity

REFRESH_S = 3600.0  # forecasts are hourly: ask again once the last answer is an hour old


class Forecast:
    """The forecast of one run.

    Args:
        given: A curve given by the user, or None.
        factor: The carbon factor the run is charged with (see `RunFactors`).
        clock: Unix time now.
    """

    def __init__(self, given: Intensity | None, factor: Factor, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.zone = factor.zone if given is None and isinstance(factor, ElectricityMaps) else None
        # the series the run is charged with, converted once (a long file takes a while to copy)
        self.charged = Intensity.of(factor) if isinstance(factor, Series) else None
        self._curve = given if given is not None else self.charged
        self.source = self._describe(given, factor)
        self._why = "" if self._curve is not None or self.zone else "the carbon intensity is one fixed figure"
        self._fetched_at = -float("inf")
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @staticmethod
    def _describe(given: Intensity | None, factor: Factor) -> str:
        if given is not None:
            return f"the forecast given ({given.source})"
        if isinstance(factor, Series):
            return f"the intensity series {factor.path!r}"
        if isinstance(factor, ElectricityMaps):
            return f"Electricity Maps' forecast for {factor.zone}"
        return "none"

    def start(self) -> None:
        """Ask Electricity Maps for the zone's forecast, off the training thread (if it is the source)."""
        if self.zone is None or (self._thread is not None and self._thread.is_alive()):
            return
        if self.clock() - self._fetched_at < REFRESH_S:
            return
        self._fetched_at = self.clock()
        self._thread = threading.Thread(target=self._fetch, name="energy-forecast", daemon=True)
        self._thread.start()

    def _fetch(self) -> None:
        points, why = fetch_forecast(self.zone or "")
        with self._lock:
            if points:
                self._curve = Intensity(tuple(t for t, _ in points), tuple(v for _, v in points), self.source)
                self._why = ""
            elif self._curve is None:
                self._why = f"Electricity Maps gave no forecast for {self.zone}: {why}"

    @property
    def pending(self) -> bool:
        """Waiting for the first answer: no forecast yet, and no reason why not."""
        with self._lock:
            return self._curve is None and not self._why

    def curve(self) -> Intensity | None:
        """The latest forecast, or None (see `missing`); a live one is asked again when an hour old."""
        self.start()
        with self._lock:
            return self._curve

    @property
    def missing(self) -> str:
        """Why there is no forecast ("" when there is, or while it is being fetched)."""
        with self._lock:
            return self._why

    def wait(self, timeout: float) -> None:
        """Wait for a fetch in flight (tests; a plan never waits)."""
        if self._thread is not None:
            self._thread.join(timeout)
