"""Units and physical bounds every layer shares, written once.

A bound is the largest figure that can be true of any machine, grid or run: an argument
beyond it is refused at construction (`energy_core.checks`), a stored figure beyond it
(a checkpoint, a series file, an API's answer) is damage, never a total. Each bound leaves
room above the largest real figure known, so that no real setup is refused; what it
guards against is a unit mistake or a corrupt value (``1e300``), which would otherwise
overflow a sum or poison a total with ``inf`` and NaN.
"""

from __future__ import annotations

J_PER_KWH = 3.6e6  # joules in a kilowatt-hour

# Power of one device. No GPU board, CPU package or DRAM domain draws more (the largest
# accelerator boards are rated about 1.2 kW); a power cap or a reading beyond is a mistake.
MAX_DEVICE_W = 5000.0
# A CPU socket's thermal design power: the largest sockets sold are rated 500 W.
MAX_TDP_W = 1000.0
# Grid carbon intensity: no grid emits more (coal plants about 1,000 g/kWh).
MAX_G_PER_KWH = 2000.0
# Power usage effectiveness (>= 1 by definition): old enterprise rooms reach about 3.
MAX_PUE = 10.0
# An electricity price per kWh, in any currency (1e6: a unit mistake, even in the weakest currency).
MAX_PRICE_PER_KWH = 1e6
# One run's energy: 1e21 J is ten years of the world's electricity (about 1e20 J a year).
MAX_JOULES = 1e21
MAX_KWH = MAX_JOULES / J_PER_KWH
# The CO2e and the cost of the most energy a run can use, at the worst factors.
MAX_CO2E_KG = MAX_KWH * MAX_PUE * MAX_G_PER_KWH / 1000.0
MAX_COST = MAX_KWH * MAX_PUE * MAX_PRICE_PER_KWH
# A run's length: a century of training.
MAX_SECONDS = 100 * 365.25 * 86400.0
# A run's power, all its devices together: a million devices, each at the most one can draw.
MAX_RUN_W = 1e6 * MAX_DEVICE_W
# A moment (unix time): 9999-12-31 23:59:59 UTC, the last a date shows.
LATEST_TIME = 253402300799.0
# Steps, samples and tokens: what a 64-bit counter holds.
MAX_COUNT = 2**63 - 1
