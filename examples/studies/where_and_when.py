"""Study 5 (Patterson et al. 2021): the same run's CO2e by where it runs and at which PUE.

    python examples/studies/where_and_when.py [--epochs 3] [--out runs/studies/where_and_when]

Trains a small model on a CPU with `EnergyMonitor` (run record), then prices the measured
energy on a range of grids and cloud regions from the data codecarbon ships, at a
hyperscale (1.1) and an industry-average (1.58) PUE, and reproduces the paper's arithmetic
check (GPT-3: 1,287 MWh x 0.429 kg/kWh = 552 tCO2e). Writes report.md, report.json and the
`energy-report` page for the run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning.pytorch as L
import torch
from study_kit import quiet, read_record, write_report
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from energy_core import J_PER_KWH, co2e_kg, resolve_intensity
from lightning_energy import EnergyMonitor

GRIDS = [
    ("FRA", None),
    ("SWE", "SE3"),
    ("NOR", "NO1"),
    ("CAN", "quebec"),
    ("BRA", None),
    ("GBR", None),
    ("USA", "CA"),
    ("DEU", None),
    ("USA", None),
    ("JPN", None),
    ("CAN", "alberta"),
    ("CHN", None),
    ("AUS", None),
    ("IND", None),
    ("POL", None),
    ("ZAF", None),
    ("USA", "WV"),
]
CLOUDS = [
    ("gcp", "europe-north1"),
    ("gcp", "europe-west9"),
    ("gcp", "us-west1"),
    ("gcp", "us-central1"),
    ("gcp", "asia-south1"),
    ("gcp", "europe-central2"),
]
PUES = {"hyperscale": 1.1, "industry average": 1.58}
GPT3_MWH, GPT3_KG_PER_KWH = 1287.0, 0.429


def train(epochs: int, record: Path) -> float:
    """Train a small MLP; return the measured kWh from the run record."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8192, 64, generator=g)
    data = DataLoader(TensorDataset(x, x[:, :8].sum(1, keepdim=True)), batch_size=64, shuffle=True)

    class Model(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 1))

        def training_step(self, batch, batch_idx):
            loss = nn.functional.mse_loss(self.net(batch[0]), batch[1])
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    monitor = EnergyMonitor(carbon_intensity_g_per_kwh=0.0, record_path=str(record), summary=False)
    L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[monitor],
    ).fit(Model(), data)
    summary = read_record(record)["summary"]
    return summary["metrics"]["energy/total_kwh"]


def price(kwh: float) -> list[dict[str, object]]:
    """CO2e of ``kwh`` on every grid and cloud region, at each PUE (grams)."""
    rows = []
    places = [({"country": c, "region": r}, f"{c}/{r}" if r else c) for c, r in GRIDS]
    places += [({"cloud_provider": p, "cloud_region": r}, f"{p} {r}") for p, r in CLOUDS]
    for kwargs, name in places:
        intensity, _ = resolve_intensity(**kwargs)
        row = {"place": name, "g_per_kwh": intensity.g_per_kwh, "source": intensity.source}
        row.update({f"g_co2e_pue_{pue}": 1000 * co2e_kg(kwh, pue, intensity.g_per_kwh) for pue in PUES.values()})
        rows.append(row)
    return sorted(rows, key=lambda r: r["g_per_kwh"])


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runs/studies/where_and_when"))
    args = parser.parse_args(argv)
    quiet()
    args.out.mkdir(parents=True, exist_ok=True)
    record = args.out / "energy.jsonl"
    record.unlink(missing_ok=True)
    kwh = train(args.epochs, record)
    rows = price(kwh)
    spread = rows[-1]["g_per_kwh"] / rows[0]["g_per_kwh"]
    gpt3_t = co2e_kg(GPT3_MWH * 1000, 1.0, GPT3_KG_PER_KWH * 1000) / 1000
    result = {
        "kwh": kwh,
        "rows": rows,
        "spread_dirtiest_over_cleanest": spread,
        "pue_ratio": PUES["industry average"] / PUES["hyperscale"],
        "gpt3_tco2e": gpt3_t,
    }
    lines = [
        f"# Where and when: the same run's CO2e ({kwh * J_PER_KWH:.0f} J = {kwh:.3g} kWh measured)",
        "",
        f"| place | g/kWh | g CO2e at PUE {PUES['hyperscale']} | g CO2e at PUE {PUES['industry average']} | source |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['place']} | {r['g_per_kwh']:.0f} | {r['g_co2e_pue_1.1']:.4g} | "
            f"{r['g_co2e_pue_1.58']:.4g} | {r['source']} |"
        )
    lines += [
        "",
        f"Dirtiest / cleanest grid: {spread:.0f}x. Average / hyperscale PUE: {result['pue_ratio']:.2f}x.",
        f"Check (Patterson et al. 2021): {GPT3_MWH:,.0f} MWh x {GPT3_KG_PER_KWH} kg/kWh = {gpt3_t:.0f} tCO2e.",
    ]
    write_report(args.out, result, lines, [record])
    return result


if __name__ == "__main__":
    main()
