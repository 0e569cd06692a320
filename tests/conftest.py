"""Hermetic hardware for every test: no real GPU, no real RAPL, unless a test installs fakes."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest
from hypothesis import settings

from energy_core.devices import amd, rapl
from energy_core.power import limits
from tests.doubles import sim_amdsmi
from tests.doubles.electricity_maps import Replay, serve_tls
from tests.doubles.fake_rapl import FakeRapl
from tests.doubles.sim_gpu import SimDriver, SimGpu
from tests.doubles.sim_nvml import SimNvml, install
from tests.doubles.vendors import simulate

# A busy machine can hold one example past hypothesis's 200 ms deadline, which fails the test as flaky: the
# properties are about values, never speed (speed targets live in benchmarks/).
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")


@pytest.fixture(autouse=True, scope="session")
def python_handles_ctrl_c() -> None:
    """The Ctrl-C tests need Python's own SIGINT handler. A shell without job control starts a
    background job (``python -m pytest &`` in a script) with SIGINT ignored, and Python then keeps
    it ignored: those tests failed there, for nothing the library did."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def no_real_hardware(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """By default the machine has no NVML library, no amdsmi package and an empty powercap directory."""
    install(monkeypatch, SimNvml([], library=False))
    sim_amdsmi.install(monkeypatch, None)
    monkeypatch.setattr(amd, "AMDGPU_MODULE", tmp_path_factory.mktemp("no-amdgpu") / "amdgpu")
    monkeypatch.setattr(rapl, "POWERCAP_ROOT", tmp_path_factory.mktemp("no-powercap"))
    journal = tmp_path_factory.mktemp("journal") / "power-limits.json"
    monkeypatch.setenv("ENERGY_CALLBACKS_POWER_JOURNAL", str(journal))  # never /var/tmp in tests
    locks = tmp_path_factory.mktemp("board-locks")  # never /dev/shm: tests running side by side share board names
    monkeypatch.setenv("ENERGY_CALLBACKS_BOARD_LOCKS", str(locks))


@pytest.fixture(autouse=True)
def no_refused_restore_left() -> Iterator[None]:
    """A cap whose restore the simulated driver refused stays in this process's list to retry
    (`energy_core.power.limits`), with its exit guard: the next test's cap would retry it on a
    board that test never made. Each test starts with none."""
    yield
    with limits._LEFT_LOCK:
        left = list(limits._LEFT)
        limits._LEFT.clear()
    for earlier in left:
        earlier.guard.uninstall()


@pytest.fixture(autouse=True)
def no_sampler_left_running(request: pytest.FixtureRequest):
    """A test leaves no sampler thread behind: a monitor that is never closed, on any path, fails here
    (and would skew the next test's thread count)."""
    before = {t for t in threading.enumerate() if t.name == "energy-sampler"}
    yield
    left = [t for t in threading.enumerate() if t.name == "energy-sampler" and t not in before]
    for thread in left:
        thread.join(5)  # one in its last reading gets a moment to finish
    alive = [t for t in left if t.is_alive()]
    assert not alive, f"{len(alive)} sampler thread(s) still running after {request.node.name}"


@pytest.fixture
def sim_gpus(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Factory: ``sim_gpus(SimGpu(...), ...)`` installs simulated GPUs with those boards.

    The simulated NVML by default; ``@both_vendors`` (`tests.doubles.vendors`) runs the
    test with each vendor's simulation in turn.
    """
    vendor = getattr(request, "param", "nvml")

    def make(*gpus: SimGpu, **kwargs) -> SimDriver:
        return simulate(monkeypatch, vendor, list(gpus), **kwargs)

    make.vendor = vendor  # type: ignore[attr-defined]
    return make


@pytest.fixture
def fake_rapl(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """Factory: ``fake_rapl(max_range_uj=..., dram=...)`` makes a powercap tree and points RAPL at it."""
    made: list[FakeRapl] = []

    def make(**kwargs) -> FakeRapl:
        tree = FakeRapl(tmp_path / "powercap", **kwargs)
        monkeypatch.setattr(rapl, "POWERCAP_ROOT", tree.root)
        made.append(tree)
        return tree

    yield make
    for tree in made:
        tree.stop()


@pytest.fixture(params=["http"])
def electricity_maps(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path_factory):
    """The Electricity Maps API on a local server (`tests.doubles.electricity_maps.Replay`),
    with a token set and a 0.5 s request timeout. Parametrize it indirectly with ``"https"``
    for the server behind TLS, with a certificate of its own that the client is told to trust
    (``SSL_CERT_FILE``), as the real API is."""
    from energy_core.carbon import electricity_maps as intensity

    server = ThreadingHTTPServer(("127.0.0.1", 0), Replay)
    if request.param == "https":
        certificate = serve_tls(server, tmp_path_factory.mktemp("tls"))
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate))
    # Polled every 20 ms, not every 0.5 s: shutdown() waits for the next poll, at every test's end.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    host = "localhost" if request.param == "https" else "127.0.0.1"
    monkeypatch.setenv(intensity.URL_ENV, f"{request.param}://{host}:{server.server_address[1]}/v3")
    monkeypatch.setenv(intensity.TOKEN_ENV, "secret-token-123")
    monkeypatch.setattr(intensity, "TIMEOUT_S", 0.5)
    Replay.script, Replay.forecasts, Replay.tokens, Replay.paths = [], [], [], []
    yield Replay
    server.shutdown()
