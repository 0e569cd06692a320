"""A fake ``/sys/class/powercap`` tree: RAPL zones with ``energy_uj`` in µJ that wraps.

Layout as on an Intel server: ``intel-rapl:0`` (package-0) with sub-zones
``intel-rapl:0:0`` (core) and ``intel-rapl:0:1`` (dram), plus ``intel-rapl:1`` (psys,
which must not be counted). Values are written by `FakeRapl.set_energy` or by a
background thread following power traces (`FakeRapl.run`).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.doubles.power_traces import Trace


class FakeRapl:
    def __init__(self, root: Path, max_range_uj: int = 262_143_328_850, dram: bool = True) -> None:
        self.root = root
        self.max_range_uj = max_range_uj
        self.zones = {"cpu": root / "intel-rapl:0"}
        self._make(self.zones["cpu"], "package-0")
        self._make(self.zones["cpu"] / "intel-rapl:0:0", "core")
        if dram:
            self.zones["dram"] = self.zones["cpu"] / "intel-rapl:0:1"
            self._make(self.zones["dram"], "dram")
        self._make(root / "intel-rapl:1", "psys")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # `run`'s writer thread waits for the GIL: a read may show the energy of this long ago, at most
        # (from the moment the value written was computed to the next write's end), the fake's counter period.
        self.longest_gap_s = 0.0

    def _make(self, zone: Path, name: str) -> None:
        zone.mkdir(parents=True)
        (zone / "name").write_text(name + "\n")
        (zone / "max_energy_range_uj").write_text(f"{self.max_range_uj}\n")
        (zone / "energy_uj").write_text("0\n")

    def set_energy(self, kind: str, joules: float) -> None:
        """Write the counter for ``joules`` since the start (wrapping like the kernel)."""
        uj = int(joules * 1e6) % self.max_range_uj
        path = self.zones[kind] / "energy_uj"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{uj}\n")
        tmp.replace(path)  # readers never see a half-written value

    def run(self, traces: dict[str, Trace], period_s: float = 0.002) -> float:
        """Update the counters from traces on a thread; returns the start time (perf_counter)."""
        start = time.perf_counter()

        def loop() -> None:
            shown = start  # the moment the values on disk are for
            while not self._stop.wait(period_s):
                t = time.perf_counter() - start
                for kind, trace in traces.items():
                    self.set_energy(kind, trace.energy(t))
                self.longest_gap_s = max(self.longest_gap_s, time.perf_counter() - shown)
                shown = start + t

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return start

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
