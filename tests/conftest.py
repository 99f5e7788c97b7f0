"""Shared fixtures: small inputs, seeded models, and the optional real data folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from napari_medspike import create_model

torch.set_num_threads(min(2, torch.get_num_threads()))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _user_data_here(tmp_path_factory, monkeypatch) -> None:
    """The user data folder (default corrections, drafts, the list of corrections folders) in a
    fresh temporary folder per test, never the real one (platformdirs reads XDG_DATA_HOME)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("user-data")))


def _calibrated(arch: str, size: tuple[int, int] = (64, 64), **config) -> torch.nn.Module:
    """A model whose BN statistics were estimated on random images (untrained models are
    otherwise silent in eval mode: BN running stats of 0/1 leave conv outputs below threshold)."""
    model = create_model(arch, **config)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(2, 3, *size))
    return model.eval()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture
def calibrated():
    """Factory: ``calibrated(arch, size=(64, 64), **config)`` -> eval model with fitted BN stats."""
    return _calibrated
