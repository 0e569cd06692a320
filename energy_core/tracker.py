"""EnergyTracker: the bookkeeping every framework adapter shares.

It turns hook calls (fit start, batch end, logging boundary, epoch end, validation start
and end, fit end) into the metric dictionaries of the spec, keeps totals across
checkpoint resumes, and writes the run record. Adapters stay thin: they decide *when*
(from the framework's hooks and logging cadence) and *where* (the framework's loggers);
this module decides *what*.

Hot path: `EnergyTracker.add_batch` adds two integers (and, for token masks, queues one
lazy device sum). Everything that reads the hardware happens on the sampler thread;
everything that computes figures happens at logging boundaries.
"""

from __future__ import annotations

import importlib.metadata
import platform
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from energy_core import nvidia
from energy_core.batch import count_batch
from energy_core.carbon import check_finite, co2e_kg, resolve_intensity
from energy_core.cpu_estimate import cpu_model
from energy_core.meter import EnergyMeter, Mark
from energy_core.record import RECORD_VERSION, RunRecord
from energy_core.source import DEVICE_KINDS, Notice

J_PER_KWH = 3.6e6
STAGES = ("val", "test", "predict")
STATE_VERSION = 1
_VERSIONED = ("energy-callbacks", "torch", "lightning", "pytorch-lightning", "transformers", "nvidia-ml-py", "codecarbon")


def software_versions() -> dict[str, str]:
    """Installed versions of the packages that matter for a run (absent ones omitted)."""
    found = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


@dataclass(frozen=True)
class Distributed:
    """How this process takes part in a multi-process job.

    Args:
        rank: Global rank.
        world_size: Number of processes.
        reduce_sum: Element-wise sum of a list of floats over all ranks (a collective:
            every rank calls it at the same logging boundaries).
        gather: All-gather of a small picklable object (for the record header), or None.
    """

    rank: int
    world_size: int
    reduce_sum: Callable[[list[float]], list[float]]
    gather: Callable[[Any], list[Any]] | None = None


class EnergyTracker:
    """Framework-free energy bookkeeping for one training process.

    Args:
        devices: ``"auto"`` or a list drawn from ``"gpu"``, ``"cpu"``, ``"dram"``.
        sample_interval_s: Seconds between hardware reads (background thread).
        country: ISO 3166 alpha-3 code for the grid intensity, e.g. ``"FRA"``.
        region: Sub-national region (USA, CAN, CHN, SWE, NOR, FIN), with ``country``.
        cloud_provider: Cloud provider for the intensity lookup, e.g. ``"gcp"``.
        cloud_region: Cloud region, e.g. ``"europe-west9"``.
        carbon_intensity_g_per_kwh: Use this intensity instead of a lookup.
        pue: Data-centre power usage effectiveness (>= 1) applied to CO2e only.
        record_path: Append the JSON-lines run record here.

    Raises:
        ValueError: naming the argument, for any invalid value.

    Metrics (see `EnergyTracker.window`): ``energy/step_j``, ``energy/total_kwh``,
    ``energy/{gpu,cpu,dram}_kwh``, ``power/total_w``, ``power/gpu{i}_w``,
    ``throughput/samples_per_s``, ``throughput/tokens_per_s``,
    ``efficiency/j_per_sample``, ``efficiency/j_per_token``, ``carbon/co2e_kg``,
    ``carbon/intensity_g_per_kwh``; ``energy/epoch_kwh`` at epoch end;
    ``energy/{val,test,predict}_kwh`` after those stages.

    Example:
        >>> tracker = EnergyTracker(country="FRA")
        >>> notices = tracker.start_fit(step=0)            # doctest: +SKIP
        >>> tracker.add_batch(batch)                        # every micro-batch  # doctest: +SKIP
        >>> metrics = tracker.window(step=50)               # at a logging step  # doctest: +SKIP
        >>> summary = tracker.end_fit(step=100)             # doctest: +SKIP
    """

    def __init__(
        self,
        devices: str | Sequence[str] = "auto",
        sample_interval_s: float = 0.1,
        country: str | None = None,
        region: str | None = None,
        cloud_provider: str | None = None,
        cloud_region: str | None = None,
        carbon_intensity_g_per_kwh: float | None = None,
        pue: float = 1.0,
        record_path: str | None = None,
    ) -> None:
        self.meter = EnergyMeter(devices, sample_interval_s)
        self.pue = check_finite("pue", pue, 1.0)
        self.intensity, carbon_notices = resolve_intensity(
            country, region, cloud_provider, cloud_region, carbon_intensity_g_per_kwh
        )
        self.record = RunRecord(record_path) if record_path is not None else None
        self._pending_notices: list[Notice] | None = carbon_notices
        self._dist: Distributed | None = None
        self._global: dict[str, Any] | None = None  # the job's totals at the last reduction
        self._stage_global: dict[str, float] = {}
        self._resumed_job_kwh = 0.0  # the job's total in the checkpoint resumed from
        self._epoch_base_kwh = 0.0
        self.header_extra: dict[str, Any] = {}
        self.fixed_metrics: dict[str, float] = {}  # e.g. power/cap_w while a cap is in force
        self.power_caps: list[dict[str, Any]] = []  # for the header, set by a power cap
        # Totals carried over from a checkpoint (see state_dict).
        self._offset: dict[str, Any] = {"energy_j": {}, "stage_j": {}, "samples": 0, "tokens": 0, "fit_s": 0.0}
        self._fit_start: Mark | None = None
        self._stage_start: dict[str, Mark] = {}
        self._stage_j = dict.fromkeys(STAGES, 0.0)
        self._samples = 0
        self._tokens = 0
        self._reset_window(None, 0)
        self._epoch_start: Mark | None = None

    # ----------------------------------------------------------------- lifecycle
    def set_distributed(self, dist: Distributed | None) -> None:
        """Sum the figures over all ranks at every logging boundary (call before `start_fit`).

        Each rank measures its own devices; windows and totals are reduced with
        ``dist.reduce_sum`` when `window` and `end_fit` run (never per step), so every
        rank holds the job's totals. GPU power keys become ``power/gpu{rank}_w``.
        """
        self._dist = dist if dist is not None and dist.world_size > 1 else None

    def _open(self) -> list[Notice]:
        """Start measuring; the notices are returned once per tracker, then []."""
        notices = self.meter.open()
        if self._pending_notices is None:
            return []
        found, self._pending_notices = self._pending_notices + notices, None
        return found

    @property
    def fitting(self) -> bool:
        return self._fit_start is not None

    def start_fit(self, step: int = 0) -> list[Notice]:
        """Begin a training run at optimizer step ``step``; returns notices to show once.

        Idempotent: when several callbacks share this tracker, the first one starts it.
        """
        if self.fitting:
            return []
        notices = self._open()
        self._fit_start = self.meter.mark()
        self._epoch_start = self._fit_start
        self._epoch_base_kwh = self._resumed_job_kwh  # a multi-process job's epochs start here
        self._reset_window(self._fit_start, step)
        header = self.header(notices)
        if self._dist is not None and self._dist.gather is not None:  # every rank takes part
            mine = {"rank": self._dist.rank, "host": header["host"], "sources": header["hardware"]["sources"]}
            header["ranks"] = self._dist.gather(mine)
        if self.record is not None:
            self.record.write("header", **header)
        return notices

    def header(self, notices: Sequence[Notice] = ()) -> dict[str, Any]:
        """The run record's header fields."""
        model, sockets = cpu_model()
        return {
            "version": RECORD_VERSION,
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "argv": sys.argv,
            "software": software_versions(),
            "hardware": {
                "cpu": model,
                "cpu_sockets": sockets,
                "nvidia_driver": nvidia.driver_version() if any(s.info.kind == "gpu" for s in self.meter.sources) else None,
                "sources": [vars(s.info) for s in self.meter.sources],
            },
            "estimated": self.meter.estimated,
            "sample_interval_s": self.meter.sample_interval_s,
            "carbon": {"g_per_kwh": self.intensity.g_per_kwh, "source": self.intensity.source, "pue": self.pue},
            "power_caps": self.power_caps,
            "resumed_from": self._offset if self._offset["energy_j"] else None,
            "notices": [vars(n) for n in notices],
            **self.header_extra,
        }

    @property
    def resumed_kwh(self) -> float:
        """Energy carried over from a checkpoint (or earlier fits of this tracker), in kWh."""
        return sum(self._offset["energy_j"].values()) / J_PER_KWH

    def totals(self) -> dict[str, float]:
        """Cumulative figures now (``energy/*_kwh``, ``carbon/*``), checkpoint offsets included."""
        if self._fit_start is None:
            kwh = sum(self._offset["energy_j"].values()) / J_PER_KWH
            return {"energy/total_kwh": kwh, "carbon/co2e_kg": co2e_kg(kwh, self.pue, self.intensity.g_per_kwh)}
        return self._cumulative(self.meter.mark())

    def reduce_totals(self) -> dict[str, float]:
        """The job's totals now: a collective in a multi-process job (all ranks must call)."""
        if self._dist is None or self._fit_start is None:
            return self.totals()
        self._reduce(self.meter.mark(), np.zeros(len(self.meter.sources)), 0, 0)
        return self.totals()

    def watch_total(self, limit_kwh: float) -> threading.Event:
        """An event set by the sampler thread once the run's total reaches ``limit_kwh``.

        Checked after every hardware reading, so the training thread only reads a flag.
        Must be called while fitting; the watch ends with the sampler.
        """
        event = threading.Event()
        sampler = self.meter.sampler
        if not self.fitting or sampler is None:
            raise RuntimeError("watch_total needs a started fit")
        (base,) = self.meter.joules(self._fit_start)
        base_j = float(base.sum()) - sum(self._offset["energy_j"].values())
        limit_j = limit_kwh * J_PER_KWH

        def listener(t: float, values: Sequence[float]) -> None:
            if sum(values) - base_j >= limit_j:
                event.set()

        sampler.listeners.append(listener)
        if sum(self._offset["energy_j"].values()) >= limit_j:
            event.set()
        return event

    def end_fit(self, step: int, status: str = "completed") -> dict[str, float]:
        """Finish the run: final cumulative metrics, summary line, sampler stopped.

        Args:
            step: The last optimizer step.
            status: How it ended: ``"completed"``, ``"exception"``, ``"interrupted"``...
        """
        if self._fit_start is None:
            return {}
        self.meter.close()
        if self.meter.sampler is not None:
            self.meter.sampler.listeners.clear()
        end = self.meter.mark()
        if self._dist is not None:
            self._reduce(end, np.zeros(len(self.meter.sources)), 0, 0)
        metrics = self._cumulative(end)
        # Fold this run into the offsets: a later fit on the same tracker continues the totals.
        self.load_state_dict(self.state_dict(at=end), own_share=self._dist is None or self._dist.rank == 0)
        self._global = None
        self._fit_start = None
        self._samples = self._tokens = 0
        self._stage_j = dict.fromkeys(STAGES, 0.0)
        self._reset_window(None, step)
        if self.record is not None:
            self.record.write("summary", step=step, status=status, **self.summary_fields(metrics))
        return metrics

    def close(self) -> None:
        """Stop sampling and close the record (end of the process's use)."""
        self.meter.close()
        if self.record is not None:
            self.record.close()

    # ---------------------------------------------------------------- hot path
    def add_batch(self, batch: Any) -> None:
        """Count one (micro-)batch's samples and tokens. No device sync, no I/O."""
        samples, tokens = count_batch(batch)
        self._win_samples += samples
        if isinstance(tokens, int):
            self._win_tokens += tokens
        else:  # a lazy device sum: queue the addition, read it at the window's end
            self._win_lazy_tokens = tokens if self._win_lazy_tokens is None else self._win_lazy_tokens + tokens

    # ------------------------------------------------------------ figures
    def _reset_window(self, start: Mark | None, step: int) -> None:
        self._win_start = start
        self._win_step = step
        self._win_samples = 0
        self._win_tokens = 0
        self._win_lazy_tokens: Any = None
        self._excluded_j: np.ndarray | float = 0.0
        self._excluded_s = 0.0

    def _local_by_kind(self, end: Mark) -> dict[str, float]:
        """This process's joules per device kind since the first fit start, offsets included."""
        start_j, end_j = self.meter.joules(self._fit_start, end)
        by_kind = self.meter.by_kind(end_j - start_j)
        for kind, joules in self._offset["energy_j"].items():
            by_kind[kind] = by_kind.get(kind, 0.0) + joules
        return by_kind

    def _reduce(self, end: Mark, window_j: np.ndarray, samples: int, tokens: int) -> dict[str, Any]:
        """Sum this rank's figures over all ranks (one collective) and keep the job's totals."""
        assert self._dist is not None
        rank, world = self._dist.rank, self._dist.world_size
        cum = self._local_by_kind(end)
        win = self.meter.by_kind(window_j)
        gpu_j = sum(float(v) for s, v in zip(self.meter.sources, window_j) if s.info.kind == "gpu")
        has_gpu = float(any(s.info.kind == "gpu" for s in self.meter.sources))
        slots = np.zeros(3 * world)
        slots[rank], slots[world + rank], slots[2 * world + rank] = float(window_j.sum()), gpu_j, has_gpu
        mine = [cum.get(k, 0.0) for k in DEVICE_KINDS] + [float(k in cum) for k in DEVICE_KINDS]
        mine += [win.get(k, 0.0) for k in DEVICE_KINDS]
        mine += [samples, tokens, self._samples + samples + self._offset["samples"],
                 self._tokens + tokens + self._offset["tokens"]]  # fmt: skip
        total = self._dist.reduce_sum([*mine, *slots.tolist()])
        n = len(DEVICE_KINDS)
        self._global = {
            "energy_j": {k: total[i] for i, k in enumerate(DEVICE_KINDS) if total[n + i] > 0},
            "window_j": sum(total[2 * n : 3 * n]),
            "samples": int(total[3 * n]),
            "tokens": int(total[3 * n + 1]),
            "cum_samples": int(total[3 * n + 2]),
            "cum_tokens": int(total[3 * n + 3]),
            "rank_j": total[3 * n + 4 : 3 * n + 4 + world],
            "rank_gpu_j": total[3 * n + 4 + world : 3 * n + 4 + 2 * world],
            "rank_has_gpu": total[3 * n + 4 + 2 * world :],
        }
        return self._global

    def _cumulative(self, end: Mark) -> dict[str, float]:
        """Totals since the first fit start (checkpoint offsets included) at ``end``.

        In a multi-process job: the job's totals at the last reduction.
        """
        if self._fit_start is None:
            return {}
        by_kind = self._local_by_kind(end) if self._global is None else dict(self._global["energy_j"])
        total_kwh = sum(by_kind.values()) / J_PER_KWH
        metrics = {"energy/total_kwh": total_kwh}
        for kind in sorted(by_kind):
            metrics[f"energy/{kind}_kwh"] = by_kind[kind] / J_PER_KWH
        metrics["carbon/co2e_kg"] = co2e_kg(total_kwh, self.pue, self.intensity.g_per_kwh)
        metrics["carbon/intensity_g_per_kwh"] = self.intensity.g_per_kwh
        metrics.update(self.fixed_metrics)
        return metrics

    def window(self, step: int, end: Mark | None = None, extra: dict[str, Any] | None = None) -> dict[str, float]:
        """Close the logging window at optimizer step ``step`` and return its metrics.

        Window figures (mean power, J per step/sample/token, throughput) cover the
        training time since the previous window, with validation runs inside it taken
        out; cumulative figures cover the whole run. ``extra`` (e.g. the loss) goes to
        the run record only.
        """
        if self._win_start is None:
            return {}
        end = self.meter.mark() if end is None else end
        steps = step - self._win_step
        if steps <= 0 and self._win_samples == 0:  # nothing trained since the last window: keep it open
            if self._dist is not None:  # ranks reach this alike (same step): keep the collective aligned
                self._reduce(end, np.zeros(len(self.meter.sources)), 0, 0)
            return self._cumulative(end)
        start_j, end_j = self.meter.joules(self._win_start, end)
        per_source = end_j - start_j - self._excluded_j
        seconds = end.t - self._win_start.t - self._excluded_s
        local_samples, local_tokens = self._win_samples, self._window_tokens()
        samples, tokens = local_samples, local_tokens
        joules = float(per_source.sum())
        gpu_power = {s.info.name: float(v) for s, v in zip(self.meter.sources, per_source) if s.info.kind == "gpu"}
        breakdown = None
        if self._dist is not None:
            job = self._reduce(end, per_source, local_samples, local_tokens)
            joules, samples, tokens = job["window_j"], job["samples"], job["tokens"]
            gpu_power = {f"gpu{r}": j for r, (j, has) in enumerate(zip(job["rank_gpu_j"], job["rank_has_gpu"])) if has}
            breakdown = {"rank_j": job["rank_j"], "rank_gpu_j": job["rank_gpu_j"]}
        metrics = self._cumulative(end)
        if seconds > 0:
            metrics["power/total_w"] = joules / seconds
            for name, value in gpu_power.items():
                metrics[f"power/{name}_w"] = value / seconds
            if samples:
                metrics["throughput/samples_per_s"] = samples / seconds
            if tokens:
                metrics["throughput/tokens_per_s"] = tokens / seconds
        if steps > 0:
            metrics["energy/step_j"] = joules / steps
        if samples:
            metrics["efficiency/j_per_sample"] = joules / samples
        if tokens:
            metrics["efficiency/j_per_token"] = joules / tokens
        self._samples += local_samples
        self._tokens += local_tokens
        if self.record is not None:
            self.record.write(
                "window", step=step, steps=steps, samples=samples, tokens=tokens, seconds=seconds,
                elapsed_s=self.fit_seconds(end), metrics=metrics, extra=extra or {}, ranks=breakdown,
            )  # fmt: skip
        self._reset_window(end, step)
        return metrics

    def _window_tokens(self) -> int:
        lazy = 0 if self._win_lazy_tokens is None else int(self._win_lazy_tokens)
        return self._win_tokens + lazy

    def start_epoch(self) -> None:
        self._epoch_start = self.meter.mark()

    def end_epoch(self, step: int, epoch: int, extra: dict[str, Any] | None = None) -> dict[str, float]:
        """Metrics at an epoch end: the partial window since the last log, the totals,
        and ``energy/epoch_kwh`` (everything since the epoch began, validation included)."""
        end = self.meter.mark()
        metrics = self.window(step, end, extra)
        if self._epoch_start is not None and self.fitting:
            if self._global is not None:  # the job's epoch: difference of the job's totals
                total = metrics["energy/total_kwh"]
                metrics["energy/epoch_kwh"] = total - self._epoch_base_kwh
                self._epoch_base_kwh = total
            else:
                start_j, end_j = self.meter.joules(self._epoch_start, end)
                metrics["energy/epoch_kwh"] = float((end_j - start_j).sum()) / J_PER_KWH
            if self.record is not None:
                self.record.write(
                    "epoch", step=step, epoch=epoch, seconds=end.t - self._epoch_start.t,
                    elapsed_s=self.fit_seconds(end), metrics=metrics, extra=extra or {},
                )  # fmt: skip
        self._epoch_start = end
        return metrics

    def start_stage(self, stage: str) -> list[Notice]:
        """Begin a validation/test/predict run (``stage`` in `STAGES`, or a provisional name)."""
        notices = self._open()
        self._stage_start[stage] = self.meter.mark()
        return notices

    def end_stage(self, stage: str, step: int, started_as: str | None = None) -> dict[str, float]:
        """End a stage; returns ``{"energy/<stage>_kwh": cumulative kWh of that stage}``.

        During a fit, the stage's energy and time are taken out of the current training
        window so that power and J/step describe training alone.

        Args:
            stage: The stage the energy is charged to.
            step: The optimizer step, for the record.
            started_as: The name given to `start_stage`, when it was not yet known which
                stage an inference run was (the HF Trainer tells only at its end).
        """
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        start = self._stage_start.pop(started_as or stage, None)
        if start is None:
            return {}
        end = self.meter.mark()
        start_j, end_j = self.meter.joules(start, end)
        delta = end_j - start_j
        self._stage_j[stage] += float(delta.sum())
        if self._dist is not None:  # every rank ends the stage together: sum the stage's totals
            self._stage_global = dict(zip(STAGES, self._dist.reduce_sum([self._local_stage_j(s) for s in STAGES])))
        if self.fitting and self._win_start is not None and start.t >= self._win_start.t:
            self._excluded_j = self._excluded_j + delta
            self._excluded_s += end.t - start.t
        key = f"energy/{stage}_kwh"
        metrics = {key: self.stage_kwh(stage)}
        if self.record is not None:
            self.record.write("stage", stage=stage, step=step, seconds=end.t - start.t,
                              kwh=float(delta.sum()) / J_PER_KWH, metrics=metrics)  # fmt: skip
        return metrics

    def in_stage(self, stage: str) -> bool:
        return stage in self._stage_start

    def _local_stage_j(self, stage: str) -> float:
        return self._stage_j[stage] + self._offset["stage_j"].get(stage, 0.0)

    def stage_kwh(self, stage: str) -> float:
        """Energy of all runs of a stage so far (the job's, in a multi-process job), kWh."""
        if self._dist is not None and stage in self._stage_global:
            return self._stage_global[stage] / J_PER_KWH
        return self._local_stage_j(stage) / J_PER_KWH

    def fit_seconds(self, end: Mark | None = None) -> float:
        """Training wall time since the first fit start, checkpoint offsets included."""
        live = 0.0 if self._fit_start is None else (end or self.meter.mark()).t - self._fit_start.t
        return self._offset["fit_s"] + live

    # ------------------------------------------------------------ summary & state
    def summary_fields(self, metrics: dict[str, float]) -> dict[str, Any]:
        samples, tokens = self._work_totals()
        joules = metrics.get("energy/total_kwh", 0.0) * J_PER_KWH
        seconds = self.fit_seconds()
        return {
            "metrics": metrics,
            "seconds": seconds,
            "mean_power_w": joules / seconds if seconds > 0 else None,
            "samples": samples,
            "tokens": tokens,
            "j_per_sample": joules / samples if samples else None,
            "j_per_token": joules / tokens if tokens else None,
            "stage_kwh": {s: self.stage_kwh(s) for s in STAGES},
            "failed_reads": self.meter.failed_reads(),
            "estimated": self.meter.estimated,
            "carbon": {"g_per_kwh": self.intensity.g_per_kwh, "source": self.intensity.source, "pue": self.pue},
        }

    def summary_text(self, metrics: dict[str, float]) -> str:
        """A few lines for the console at the end of a run."""
        fields = self.summary_fields(metrics)
        kwh = metrics.get("energy/total_kwh", 0.0)
        kinds = [k.split("/")[1][:-4] for k in metrics if k.startswith("energy/") and k != "energy/total_kwh"]
        estimated_kinds = {s.info.kind for s in self.meter.sources if s.info.estimated}
        parts = ", ".join(
            f"{k} {metrics[f'energy/{k}_kwh']:.6g} kWh" + (" (estimated)" if k in estimated_kinds else "")
            for k in kinds
        )
        mean_w = fields["mean_power_w"]
        lines = [
            f"Energy: {kwh:.6g} kWh ({kwh * J_PER_KWH:,.1f} J) [{parts}] over {fields['seconds']:.1f} s"
            + (f", mean {mean_w:.1f} W" if mean_w is not None else ""),
            f"CO2e: {metrics.get('carbon/co2e_kg', 0.0) * 1000:.4g} g at {self.intensity.g_per_kwh:.4g} g/kWh "
            f"x PUE {self.pue:g} ({self.intensity.source})",
        ]
        if fields["samples"]:
            work = f"Work: {fields['samples']:,} samples, {fields['j_per_sample']:.4g} J/sample"
            if fields["tokens"]:
                work += f"; {fields['tokens']:,} tokens, {fields['j_per_token']:.4g} J/token"
            lines.append(work)
        stages = ", ".join(f"{s} {v:.6g} kWh" for s, v in fields["stage_kwh"].items() if v > 0)
        if stages:
            lines.append(f"Other stages: {stages}")
        if fields["failed_reads"]:
            lines.append(f"Gaps (failed reads): {fields['failed_reads']}")
        return "\n".join(lines)

    def _work_totals(self) -> tuple[int, int]:
        """(samples, tokens) since the first fit start: the job's, in a multi-process job."""
        if self._global is not None:
            return self._global["cum_samples"], self._global["cum_tokens"]
        return self._offset["samples"] + self._samples, self._offset["tokens"] + self._tokens

    def state_dict(self, at: Mark | None = None) -> dict[str, Any]:
        """Totals so far (or at mark ``at``), to store in a checkpoint; a resumed run continues.

        In a multi-process job these are the job's totals at the last logging boundary
        (a checkpoint can be written by rank 0 alone, so no collective runs here).
        """
        now = self.meter.mark() if at is None else at
        if self._global is not None:
            energy_j = dict(self._global["energy_j"])
            samples, tokens = self._work_totals()
        else:
            energy_j = self._local_by_kind(now) if self._fit_start is not None else dict(self._offset["energy_j"])
            samples = self._offset["samples"] + self._samples + self._win_samples
            tokens = self._offset["tokens"] + self._tokens + self._window_tokens()
        return {
            "version": STATE_VERSION,
            "energy_j": energy_j,
            "stage_j": {s: self.stage_kwh(s) * J_PER_KWH for s in STAGES},
            "samples": samples,
            "tokens": tokens,
            "fit_s": self.fit_seconds(now),
        }

    def load_state_dict(self, state: dict[str, Any], own_share: bool = True) -> None:
        """Continue the totals of a checkpointed run (replaces earlier offsets).

        Args:
            state: From `state_dict` (the job's totals).
            own_share: False on every rank but 0 of a multi-process job, so that the sum
                over ranks counts the checkpoint's totals once.
        """
        if not state:
            return
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"energy state version {state.get('version')!r} is not {STATE_VERSION}")
        self._resumed_job_kwh = sum(float(v) for v in state["energy_j"].values()) / J_PER_KWH
        self._offset = {
            "energy_j": {str(k): float(v) for k, v in state["energy_j"].items()} if own_share else {},
            "stage_j": {str(k): float(v) for k, v in state["stage_j"].items()} if own_share else {},
            "samples": int(state["samples"]) if own_share else 0,
            "tokens": int(state["tokens"]) if own_share else 0,
            "fit_s": float(state["fit_s"]),
        }
