"""Grid carbon intensity and CO2e: ``CO2e = kWh x PUE x intensity`` (Patterson et al. 2021).

The intensity is chosen, first match wins, from:

1. ``carbon_intensity_g_per_kwh`` given explicitly;
2. ``cloud_provider`` + ``cloud_region`` in codecarbon's ``cloud/impact.csv``;
3. ``country`` + ``region``: USA states (EPA eGRID), Canadian provinces (energy mix),
   Chinese provinces, Nordic bidding zones (SE1-4, NO1-5, FI), all from codecarbon's
   ``private_infra`` files;
4. ``country`` (ISO 3166 alpha-3) in codecarbon's ``global_energy_mix.json``;
5. the world average from codecarbon's ``carbon_intensity_per_source.json``, with one
   warning.

Every figure comes with a ``source`` string naming the file and entry it came from.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from energy_core import checks
from energy_core.codecarbon_data import load_csv, load_json
from energy_core.notices import Notice
from energy_core.units import MAX_G_PER_KWH

LBS_PER_MWH_TO_G_PER_KWH = 453.59237 / 1000.0  # 1 lb = 453.59237 g; 1 MWh = 1000 kWh
_REGION_COUNTRIES = ("USA", "CAN", "CHN", "SWE", "NOR", "FIN")
# Canada's regional data are energy mixes (percent by source); these are the names of the
# sources in carbon_intensity_per_source.json. Sources it has no factor for count as zero.
_CANADA_SOURCE_NAMES = {
    "coal": "coal",
    "petroleum": "petroleum",
    "naturalGas": "natural_gas",
    "nuclear": "nuclear",
    "hydro": "hydroelectricity",
    "wind": "wind",
    "solar": "solar",
    "biomass": "biomass",
}


@dataclass(frozen=True)
class CarbonIntensity:
    """A grid carbon intensity and where it came from.

    Args:
        g_per_kwh: Grams CO2e per kWh of electricity.
        source: Human-readable provenance, e.g. ``"codecarbon global_energy_mix.json: France (FRA, 2023)"``.
        is_default: True when no location was given and the world average is used.
    """

    g_per_kwh: float
    source: str
    is_default: bool = False


def co2e_kg(kwh: float, pue: float, g_per_kwh: float) -> float:
    """Kilograms CO2e of ``kwh`` of IT energy: ``kwh x pue x g_per_kwh / 1000``.

    Examples:
        >>> round(co2e_kg(1_287_000, 1.0, 429.0) / 1000)   # GPT-3: 1,287 MWh at 0.429 kg/kWh
        552
    """
    return kwh * pue * g_per_kwh / 1000.0


def world_average() -> CarbonIntensity:
    data = load_json("private_infra/carbon_intensity_per_source.json")
    return CarbonIntensity(
        float(data["world_average"]),
        "codecarbon carbon_intensity_per_source.json: world average",
        is_default=True,
    )


def country_intensity(iso3: str) -> CarbonIntensity:
    """Intensity of a country from codecarbon's global energy mix table.

    Raises:
        ValueError: if the code is not in the table (with the codes it may have meant).
    """
    table = load_json("private_infra/global_energy_mix.json")
    code = iso3.upper()
    if code not in table:
        guesses = _suggest_country(iso3, table)
        hint = f"; did you mean {' or '.join(map(repr, guesses))}?" if guesses else ""
        raise ValueError(
            f"country must be an ISO 3166 alpha-3 code listed in codecarbon's global_energy_mix.json "
            f"(e.g. 'FRA', 'USA', 'IND'; {len(table)} listed), got {iso3!r}{hint}"
        )
    entry = table[code]
    return CarbonIntensity(
        float(entry["carbon_intensity"]),
        f"codecarbon global_energy_mix.json: {entry['country_name']} ({code}, {entry.get('year', '?')})",
    )


def _suggest_country(given: str, table: dict[str, dict]) -> list[str]:
    """Codes a user may have meant: by name ("France"), by a 2-letter start ("fr"), by a close spelling."""
    wanted = given.strip().lower()
    by_name = {entry["country_name"].lower(): code for code, entry in table.items()}
    if wanted in by_name:
        return [by_name[wanted]]
    if len(wanted) == 2:
        starts = [code for code in table if code.lower().startswith(wanted)]
        if starts:
            return starts[:3]
    return [by_name[name] for name in difflib.get_close_matches(wanted, list(by_name), n=2, cutoff=0.8)]


def _usa(region: str) -> CarbonIntensity | None:
    data = load_json("private_infra/2023/usa_emissions.json")
    wanted = region.strip().lower()
    for name, entry in data.items():
        if name.startswith("_"):
            continue
        if wanted in (name, str(entry.get("regionCode", "")).lower()):
            g = float(entry["emissions"]) * LBS_PER_MWH_TO_G_PER_KWH
            return CarbonIntensity(g, f"codecarbon usa_emissions.json (EPA eGRID 2023): {name}")
    return None


def _canada(region: str) -> CarbonIntensity | None:
    mixes = load_json("private_infra/2023/canada_energy_mix.json")
    mix = mixes.get(region.strip().lower())
    if mix is None:
        return None
    factors = load_json("private_infra/carbon_intensity_per_source.json")
    g = sum(mix.get(ours, 0.0) / mix["total"] * float(factors[theirs]) for ours, theirs in _CANADA_SOURCE_NAMES.items())
    return CarbonIntensity(g, f"codecarbon canada_energy_mix.json x carbon_intensity_per_source.json: {region.lower()}")


def _china(region: str) -> CarbonIntensity | None:
    data = load_json("private_infra/2023/china_provincial_emissions.json")["data"]
    wanted = region.strip().lower()
    for code, entry in data.items():
        if wanted == code.lower() or wanted in entry.get("names", []):
            return CarbonIntensity(
                float(entry["emission_factor"]), f"codecarbon china_provincial_emissions.json: {entry['description']}"
            )
    return None


def _nordic(country: str, region: str) -> CarbonIntensity | None:
    data = load_json("private_infra/nordic_emissions.json")["data"]
    zone = region.strip().upper()
    prefix = {"SWE": "SE", "NOR": "NO", "FIN": "FI"}[country]
    if zone not in data or not zone.startswith(prefix):
        return None
    entry = data[zone]
    return CarbonIntensity(float(entry["emission_factor"]), f"codecarbon nordic_emissions.json: {entry['description']}")


def region_intensity(country: str, region: str) -> CarbonIntensity:
    """Intensity of a sub-national region.

    Raises:
        ValueError: if the country has no regional data or the region is unknown.
    """
    code = country.upper()
    if code not in _REGION_COUNTRIES:
        raise ValueError(
            f"region: codecarbon has sub-national data only for {', '.join(_REGION_COUNTRIES)}; "
            f"got region={region!r} with country={country!r}"
        )
    if code == "USA":
        found = _usa(region)
    elif code == "CAN":
        found = _canada(region)
    elif code == "CHN":
        found = _china(region)
    else:
        found = _nordic(code, region)
    if found is None:
        raise ValueError(
            f"region {region!r} is not in codecarbon's data for {code} "
            "(USA: state name or code, e.g. 'california' or 'CA'; CAN: province name; "
            "CHN: 'CN-BJ' or 'beijing'; SWE/NOR/FIN: bidding zone, e.g. 'SE3', 'NO1', 'FI')"
        )
    return found


def cloud_intensity(provider: str, region: str) -> CarbonIntensity | None:
    """Intensity of a cloud region from codecarbon's ``cloud/impact.csv``, or None."""
    for row in load_csv("cloud/impact.csv"):
        if row["provider"].lower() == provider.strip().lower() and row["region"] == region.strip():
            return CarbonIntensity(
                float(row["impact"]), f"codecarbon cloud/impact.csv: {row['provider']} {row['region']}"
            )
    return None


def resolve_intensity(
    country: str | None = None,
    region: str | None = None,
    cloud_provider: str | None = None,
    cloud_region: str | None = None,
    carbon_intensity_g_per_kwh: float | None = None,
) -> tuple[CarbonIntensity, list[Notice]]:
    """Pick the carbon intensity for a run (see the module docstring for the order).

    Raises:
        TypeError: naming the argument, for a location that is not a string or an
            intensity that is not a number.
        ValueError: for an unknown country, region or cloud region, a region without a
            country, a cloud region without a provider (or the reverse), or an explicit
            intensity outside [0, 2000] g/kWh. The message names the argument.

    Examples:
        >>> resolve_intensity(country="FRA")[0].g_per_kwh   # doctest: +SKIP
        56.039
    """
    checks.text("country", country, what="an ISO 3166 alpha-3 code such as 'FRA'")
    for name, value in (("region", region), ("cloud_provider", cloud_provider), ("cloud_region", cloud_region)):
        checks.text(name, value)
    g = checks.number(
        "carbon_intensity_g_per_kwh",
        carbon_intensity_g_per_kwh,
        low=0,
        high=MAX_G_PER_KWH,
        optional=True,
        unit=" g/kWh",
    )
    if g is not None:
        return CarbonIntensity(g, "given by the user (carbon_intensity_g_per_kwh)"), []
    if (cloud_provider is None) != (cloud_region is None):
        raise ValueError("cloud_provider and cloud_region must be given together (e.g. 'gcp', 'europe-west9')")
    if region is not None and country is None:
        raise ValueError(f"region={region!r} needs country (ISO 3166 alpha-3, e.g. 'USA')")
    located = None
    if country is not None:
        located = region_intensity(country, region) if region is not None else country_intensity(country)
    if cloud_provider is not None and cloud_region is not None:
        found = cloud_intensity(cloud_provider, cloud_region)
        if found is not None:
            return found, []
        providers = sorted({row["provider"] for row in load_csv("cloud/impact.csv")})
        if located is None:
            raise ValueError(
                f"cloud_region {cloud_region!r} of cloud_provider {cloud_provider!r} is not in codecarbon's "
                f"cloud/impact.csv (providers listed: {', '.join(providers)}); pass country= (and region=) "
                "or carbon_intensity_g_per_kwh= instead"
            )
        text = f"Cloud region {cloud_provider}/{cloud_region} is not in codecarbon's table; using {located.source}."
        return located, [Notice("warn", text)]
    if located is not None:
        return located, []
    default = world_average()
    text = (
        f"No location given: CO2e uses the world-average grid intensity ({default.g_per_kwh:g} g/kWh). "
        "Pass country= (ISO 3166 alpha-3), region=, cloud_provider=/cloud_region= or "
        "carbon_intensity_g_per_kwh= for a figure that means something."
    )
    return default, [Notice("warn", text)]
