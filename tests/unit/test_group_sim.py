"""The seeded simulation of the consumer group (tests/simulation.py) in `make test`: the real
membership state machine against a fake broker, coordinator and database, with faults injected
at every step. A failure names its seed and the command that replays it. More seeds:
`make simulate SEEDS=100000`."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from consumer.membership import Membership, Seek
from tests import simulation

SEEDS = 2000
CHUNK = 250


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    logger = logging.getLogger("consumer")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # the machine logs every fault it meets, loudly
    yield
    logger.setLevel(level)


@pytest.mark.parametrize("first", range(0, SEEDS, CHUNK), ids=lambda f: f"seeds {f}-{f + CHUNK - 1}")
def test_every_invariant_holds_under_faults(first: int) -> None:
    for seed in range(first, first + CHUNK):
        simulation.run_seed(
            seed
        )  # raises Violation: "seed N: ... replay: python -m tests.simulation --seed N -v"


def test_the_simulation_finds_a_rolled_back_batch_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 18 item 1 put back (a seek no longer voids what was polled before it): the
    simulation must find the loss, or it proves nothing."""
    monkeypatch.setattr(Membership, "_seek", lambda self, p, offset: Seek(p, offset))
    with pytest.raises(simulation.Violation, match=r"skipped|not the message|alerts differ") as found:
        for seed in range(300):
            simulation.run_seed(seed)
    assert "replay: .venv/bin/python -m tests.simulation --seed" in str(found.value)


def test_the_simulation_finds_a_lost_commit_counted_as_a_fence() -> None:
    """Issue 18 item 7 put back (a COMMIT whose answer was lost is retried, found fenced and
    left out of the summary): the summary check must see it."""
    with pytest.raises(simulation.Violation, match="counts"):
        for seed in range(300):
            simulation.run_seed(seed, resolve_lost_commits=False)
