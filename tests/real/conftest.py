"""Fixtures for real DDS traffic on loopback.

Each test gets its own random ROS domain id in 1..200 (disjoint per pytest-xdist
worker) so that parallel test runs on this machine do not hear each other. Loopback has no multicast here, so Cyclone is
configured for unicast discovery of 127.0.0.1 peers with all traffic on 127.0.0.1
(``loopback_config()``), in-process by ``config=`` and for peer processes through
``CYCLONEDDS_URI``.
"""

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest


def _dds():
    return pytest.importorskip("robotrl.real.dds_transport",
                               reason="cyclonedds is not installed (pip install robotrl[ros])")

HERE = Path(__file__).resolve().parent
_rng = random.SystemRandom()  # not the seeded global RNG: parallel runs must differ


def random_domain_id() -> int:
    """Under pytest-xdist each worker draws from its own share of 1..200, so two
    tests running at the same time never share a domain."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    workers = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), 1)
    share = 200 // workers
    return 1 + index * share + _rng.randrange(share)


@pytest.fixture
def domain_id() -> int:
    return random_domain_id()


@pytest.fixture(scope="session")
def new_domain_id():
    """``random_domain_id`` for fixtures wider than a test (module-scoped chains)."""
    return random_domain_id


@pytest.fixture
def make_dds():
    """Factory for in-process DDS transports on loopback; all are closed after the test."""
    dds = _dds()
    made = []

    def make(domain_id: int):
        transport = dds.DdsTransport(domain_id, config=dds.loopback_config())
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close()


class Peer:
    def __init__(self, domain_id: int):
        self.domain_id = domain_id
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), CYCLONEDDS_URI=_dds().loopback_config(),
                   OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, str(HERE / "dds_peer.py")], cwd=HERE, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # blocks until "ready" or the process exits
        if line.strip() != "ready":
            self.close()
            raise RuntimeError(f"dds_peer.py did not start (said {line!r}, exit {self.proc.returncode})")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def peer():
    """One echo peer process per test module (on its own random domain): starting a
    process per test would cost more CPU than the tests themselves."""
    p = Peer(random_domain_id())
    yield p
    p.close()
