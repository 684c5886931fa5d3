"""Shared test fixtures: paths to the shared data and deterministic seeding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _one_thread():  # noqa: ANN202
    """The tests use tiny models, where a second OpenMP thread buys nothing; on a busy 2-core machine two
    spinning threads made them 10-100x slower. One thread keeps the suite fast and its timing stable."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA} (../shared must sit beside the repository)")
    return SHARED_DATA
