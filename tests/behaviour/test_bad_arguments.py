"""Every public argument of the eight public classes, given bad values: a TypeError or ValueError that names it.

A bool is not a number, a number is not a string, ``"no"`` is not ``False``; a value of the
right type outside the allowed range is a ValueError. Nothing is accepted silently and
nothing fails deep inside with an AttributeError.
"""

from __future__ import annotations

import math
from datetime import datetime

import pytest

from energy_core import EnergyLoop
from hf_energy import EnergyBudgetCallback, EnergyCallback, EnergyToTargetCallback, PowerCapCallback, TimeShiftCallback
from lightning_energy import EnergyBudget, EnergyMonitor, EnergyToTarget, PowerCap, TimeShift

NAN, INF = math.nan, math.inf
MEASURE = {
    "devices": [5, None, [], ["tpu"], "everything", ["gpu", 3], {"gpu": 1}, True],
    "sample_interval_s": [True, "0.1", None, 0, -1, NAN, INF, 61, 0.0001, 10**400],
    "country": [123, True, "", "Narnia", "FR", ["FRA"]],
    "region": [5, "CA"],  # a region without a country
    "cloud_provider": [7, "gcp"],  # a provider without a region
    "cloud_region": [7],
    "carbon_intensity_g_per_kwh": [True, "400", -5, NAN, INF, 2001, 1e308],
    "pue": [True, "1.2", 0.5, -1, NAN, INF, None, 10.5, 1e308, 10**400],
    "record_path": [5, True, "", b"energy.jsonl"],
    # Physical bounds (energy_core/units.py): a 1e300 W TDP logged 1.2e298 W; pue=1e308 with an
    # intensity of 1e308 ended the fit in NaN; "FR\n" passed the zone's pattern ($ matches before a newline).
    "cpu_tdp_w": [True, "95", 0, -5, NAN, INF, 1001, 1e300],
    "electricity_maps_zone": [5, "", "FR\n", "FR/../x", "FR?zone=DE"],
    "price_per_kwh": [True, -0.1, NAN, 2e6, b"prices.csv"],
    "currency": [None, 5, "euro", "EU"],
}
LIMITS = {
    "max_kwh": [True, "1", 0, -1, NAN, INF, 1e300],
    "max_co2e_kg": [False, "2", 0, -0.5, NAN],
    "forecast": ["maybe", 1, None, True],
}
CAP = {
    "watts": [True, "max", -10, 0, NAN, INF, [250], 1e300, 10**400],
    "fraction": [True, 0, 1.5, -0.5, "0.5", NAN],
    "gpus": [0, "some", [-1], [True], [0, 0], [], ["0"], 1.5, b"\x00\x01", bytearray(b"\x00"), (0.0,)],
    "strict": ["no", 1, None],
    "max_slowdown": [True, 0, -1, 11, NAN, "0.1"],
}
TARGET = {
    "target": [True, "0.9", NAN, INF, [0.9]],
    "mode": ["maximize", 1, None, True],
    "stop": ["yes", 1, None],
    "min_gain_per_kwh": [True, "1", -1, NAN, INF],
    "patience": [0, -1, 1.5, True, "2"],
}
METRIC = {EnergyToTarget: "monitor", EnergyToTargetCallback: "metric"}  # what each class calls it
SHIFT = {
    "deadline": [None, 5, True, "tomorrow", "2030-01-01T00:00:00", datetime(2030, 1, 1), ["2030-01-01"]],
    "mode": ["later", 1, None, True],
    "forecast": [5, True, [], [(1, 2)], [("x", 1.0)], [("2030-01-01T00:00:00+00:00", -1)], b"grid.csv", "/no/grid.csv"],
    "expected_duration_s": [True, "3600", 0, -1, NAN, INF],
    "idle_w": [True, "70", -1, NAN, INF, 1e12],  # a run's power: at most a million boards of 5 kW
    "resume_s": [True, "60", -1, NAN],
    "exit_code": [0, 256, True, "75", 75.0, -1],
}
DEADLINE = {"deadline": "2030-01-01T00:00:00+00:00"}
MONITOR_ONLY = {"log_every_n_steps": [0, -1, 1.5, True, "10"], "progress_bar": ["yes", 1, None], "summary": ["no", 0]}

CASES = [
    *(
        (cls, name, value, {})
        for cls in (EnergyMonitor, EnergyCallback)
        for name, vs in MEASURE.items()
        for value in vs
    ),
    *((EnergyMonitor, name, value, {}) for name, vs in MONITOR_ONLY.items() for value in vs),
    (EnergyCallback, "summary", "no", {}),
    *(
        (cls, name, value, {"max_kwh": 1.0})
        for cls in (EnergyBudget, EnergyBudgetCallback)
        for name, vs in MEASURE.items()
        for value in vs
    ),
    *(
        (cls, name, value, {})
        for cls in (EnergyBudget, EnergyBudgetCallback)
        for name, vs in LIMITS.items()
        for value in vs
    ),
    *(
        (cls, name, value, {} if name in ("watts", "fraction") else {"watts": 250})
        for cls in (PowerCap, PowerCapCallback)
        for name, vs in CAP.items()
        for value in vs
    ),
    *(
        (cls, name, value, {METRIC[cls]: "val_acc", "target": 0.9})
        for cls in (EnergyToTarget, EnergyToTargetCallback)
        for name, vs in {**TARGET, **MEASURE}.items()
        for value in vs
    ),
    *((cls, METRIC[cls], value, {"target": 0.9}) for cls in METRIC for value in ("", 5, None, True, ["val_acc"])),
    *((cls, "min_watts", value, {"watts": "auto"}) for cls in (PowerCap, PowerCapCallback) for value in [0, 1e300]),
    *(
        (cls, name, value, DEADLINE)
        for cls in (TimeShift, TimeShiftCallback)
        for name, vs in MEASURE.items()
        for value in vs
    ),
    *(
        (cls, name, value, DEADLINE)
        for cls in (TimeShift, TimeShiftCallback)
        for name, vs in SHIFT.items()
        for value in vs
    ),
    *((TimeShift, "checkpoint_path", value, DEADLINE) for value in (5, True, "", b"time_shift.ckpt")),
]


def test_the_table_covers_at_least_150_bad_values_over_ten_classes() -> None:
    assert len(CASES) >= 150
    assert len({cls for cls, *_ in CASES}) == 10


@pytest.mark.parametrize(
    ("cls", "name", "value", "others"),
    CASES,
    ids=[f"{cls.__name__}-{name}={repr(value)[:24]}" for cls, name, value, _ in CASES],
)
def test_a_bad_value_raises_naming_the_argument(cls, name, value, others) -> None:
    with pytest.raises((TypeError, ValueError)) as caught:
        cls(**{**others, name: value})
    assert name in str(caught.value)


@pytest.mark.parametrize("cls", [EnergyMonitor, EnergyCallback, EnergyBudget, EnergyBudgetCallback])
def test_a_directory_is_not_a_record_path(cls, tmp_path) -> None:
    others = {"max_kwh": 1.0} if "Budget" in cls.__name__ else {}
    with pytest.raises(ValueError, match="record_path must be a file"):
        cls(record_path=tmp_path, **others)


def test_the_wrong_type_is_a_type_error_and_the_wrong_range_a_value_error() -> None:
    with pytest.raises(TypeError, match=r"pue must be in \[1, 10\], got bool True"):
        EnergyMonitor(pue=True)
    with pytest.raises(ValueError, match=r"pue must be in \[1, 10\], got 0.5"):
        EnergyMonitor(pue=0.5)
    with pytest.raises(TypeError, match="strict must be True or False, got str 'no'"):
        PowerCap(watts=250, strict="no")
    with pytest.raises(TypeError, match="country must be an ISO 3166 alpha-3 code"):
        EnergyCallback(country=123)


@pytest.mark.parametrize(
    ("cls", "others"),
    [
        (EnergyMonitor, {}),
        (EnergyCallback, {}),
        (EnergyBudget, {"max_kwh": 1.0}),
        (EnergyBudgetCallback, {"max_kwh": 1.0}),
        (PowerCap, {"watts": 250}),
        (PowerCapCallback, {"watts": 250}),
        (TimeShift, DEADLINE),
        (TimeShiftCallback, DEADLINE),
    ],
)
def test_a_misspelt_argument_is_named_with_the_class_the_user_wrote(cls, others) -> None:
    # PowerCap(watts=250, strct=True) said "PowerCapRun.__init__() got an unexpected keyword argument":
    # a class the user never wrote, and no list of what it takes.
    with pytest.raises(TypeError, match=rf"^{cls.__name__} got unexpected keyword arguments \['strct'\]; its "):
        cls(**others, strct=True)


# ----------------------------------------------------------------------------- EnergyLoop
LOOP = {
    "notify": [None, "print", 5],  # None failed later with "'NoneType' object is not callable"
    "ranks": [5, 0, "rank0", {"rank": 0}],  # 5 failed later with an AttributeError
    "log_every_n_steps": [0, True, 2.5],
    "total_steps": [0, "100"],
    "budget": [1.0, {"max_kwh": 1}],
    "power_cap": [250, "auto"],
}


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, vs in LOOP.items() for v in vs])
def test_energy_loop_refuses_a_bad_value_at_construction(name, value) -> None:
    with pytest.raises((TypeError, ValueError)) as caught:
        EnergyLoop(devices=["cpu"], **{name: value})
    assert name in str(caught.value)


def test_an_unknown_stage_name_is_refused_before_its_block_runs() -> None:
    # It ran the whole block, then raised, replacing the block's own exception.
    loop = EnergyLoop(devices=["cpu"], notify=lambda notice: None)
    ran = []
    with pytest.raises(ValueError, match="name must be one of 'val', 'test', 'predict', got 'validation'"):
        with loop.stage("validation"):
            ran.append(True)
    assert ran == []


@pytest.mark.parametrize("cls", [PowerCap, PowerCapCallback])
@pytest.mark.parametrize("gpus", [[True], [0, False], ["0"], [0.0]])
def test_a_gpu_index_that_is_no_integer_is_a_type_error(cls, gpus) -> None:
    # A bool is not a number: [True] raised ValueError, as a negative index does.
    with pytest.raises(TypeError, match="gpus must be"):
        cls(watts=250, gpus=gpus)


@pytest.mark.parametrize("gpus", [[-1], [], [0, 0]])
def test_a_gpu_index_list_out_of_range_is_a_value_error(gpus) -> None:
    with pytest.raises(ValueError, match="gpus must be"):
        PowerCap(watts=250, gpus=gpus)
