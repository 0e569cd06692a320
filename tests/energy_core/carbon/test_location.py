"""Carbon arithmetic and the intensity lookup over codecarbon's bundled data."""

from __future__ import annotations

import pytest

from energy_core.carbon.location import co2e_kg, resolve_intensity
from energy_core.codecarbon_data import load_csv, load_json


def test_gpt3_check_from_patterson_2021() -> None:
    # 1,287 MWh at 0.429 kg/kWh is 552 tCO2e
    assert co2e_kg(1_287_000, pue=1.0, g_per_kwh=429.0) / 1000 == pytest.approx(552.1, abs=0.1)


def test_pue_multiplies_co2e() -> None:
    assert co2e_kg(2.0, pue=1.5, g_per_kwh=400.0) == pytest.approx(1.2)


def test_country_intensity_is_codecarbons_figure() -> None:
    intensity, notices = resolve_intensity(country="FRA")
    assert intensity.g_per_kwh == load_json("private_infra/global_energy_mix.json")["FRA"]["carbon_intensity"]
    assert 50 < intensity.g_per_kwh < 60  # FIELD_NOTES: FRA is about 56
    assert "France" in intensity.source and notices == []
    assert resolve_intensity(country="fra")[0] == intensity


def test_usa_state_by_name_or_code_in_g_per_kwh() -> None:
    by_code, _ = resolve_intensity(country="USA", region="CA")
    by_name, _ = resolve_intensity(country="USA", region="California")
    lbs_per_mwh = load_json("private_infra/2023/usa_emissions.json")["california"]["emissions"]
    assert by_code == by_name
    assert by_code.g_per_kwh == pytest.approx(lbs_per_mwh * 0.45359237)


def test_other_regions() -> None:
    quebec, _ = resolve_intensity(country="CAN", region="quebec")
    alberta, _ = resolve_intensity(country="CAN", region="alberta")
    assert quebec.g_per_kwh < 60 < 500 < alberta.g_per_kwh  # hydro vs fossil
    assert resolve_intensity(country="CHN", region="CN-BJ")[0] == resolve_intensity(country="CHN", region="beijing")[0]
    assert resolve_intensity(country="SWE", region="se3")[0].g_per_kwh < 100


def test_cloud_region_and_precedence() -> None:
    row = next(r for r in load_csv("cloud/impact.csv") if r["region"] == "europe-west9")
    cloud, _ = resolve_intensity(country="USA", cloud_provider="gcp", cloud_region="europe-west9")
    assert cloud.g_per_kwh == float(row["impact"])
    explicit, _ = resolve_intensity(
        country="USA", cloud_provider="gcp", cloud_region="europe-west9", carbon_intensity_g_per_kwh=123.0
    )
    assert explicit.g_per_kwh == 123.0 and "user" in explicit.source


def test_unlisted_cloud_region_falls_back_to_the_country_with_a_warning() -> None:
    intensity, notices = resolve_intensity(
        country="USA", region="virginia", cloud_provider="aws", cloud_region="us-east-1"
    )
    assert "virginia" in intensity.source
    assert len(notices) == 1 and notices[0].level == "warn"


def test_no_location_uses_the_world_average_with_one_warning() -> None:
    intensity, notices = resolve_intensity()
    assert intensity.g_per_kwh == load_json("private_infra/carbon_intensity_per_source.json")["world_average"]
    assert intensity.is_default and len(notices) == 1 and "world-average" in notices[0].text


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"country": "XYZ"}, "country"),
        ({"country": "France"}, "country"),
        ({"country": "USA", "region": "atlantis"}, "region"),
        ({"country": "DEU", "region": "bavaria"}, "region"),
        ({"region": "CA"}, "region"),
        ({"cloud_provider": "gcp"}, "cloud_region"),
        ({"cloud_provider": "aws", "cloud_region": "us-east-1"}, "cloud_region"),
        ({"carbon_intensity_g_per_kwh": -1.0}, "carbon_intensity_g_per_kwh"),
        ({"carbon_intensity_g_per_kwh": float("nan")}, "carbon_intensity_g_per_kwh"),
        ({"carbon_intensity_g_per_kwh": float("inf")}, "carbon_intensity_g_per_kwh"),
    ],
)
def test_bad_locations_raise_naming_the_argument(kwargs, argument) -> None:
    with pytest.raises(ValueError, match=argument):
        resolve_intensity(**kwargs)
