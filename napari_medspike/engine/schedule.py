"""Learning-rate schedules stepped by the trainer after every optimiser step."""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import torch

SCHEDULES = ("plateau", "cosine")


class CosineSchedule:
    """Cosine decay of each parameter group's learning rate from its starting value down to
    ``floor`` times it, by the fraction of the run done: ``steps_done / total_steps`` or, with a
    time budget of ``minutes``, the share of it spent since the schedule was made (by ``clock``;
    :meth:`count_time_from` moves that start), whichever
    is further along. So a run cut short by its time budget still ends annealed.

    Call :meth:`step` after every optimiser step. :meth:`state_dict` and
    :meth:`load_state_dict` carry the steps done and the starting rates across a resume.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, minutes: float | None = None,
                 clock: Callable[[], float] = time.time, floor: float = 0.01) -> None:
        if total_steps < 1:
            raise ValueError(f"a cosine schedule needs at least one step, got {total_steps}")
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"floor must lie in [0, 1], got {floor}")
        self.optimizer, self.total_steps, self.minutes, self.floor = optimizer, total_steps, minutes, floor
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.steps_done = 0
        self._clock = clock
        self._start = clock()

    def count_time_from(self, start: float) -> None:
        """Measure the time budget from ``start`` (by ``clock``), e.g. a resumed run's first start."""
        self._start = start

    def fraction(self) -> float:
        """How far along the run is, from 0 to 1."""
        done = self.steps_done / self.total_steps
        if self.minutes:
            done = max(done, (self._clock() - self._start) / (60.0 * self.minutes))
        return min(done, 1.0)

    def scale(self) -> float:
        """The factor on the starting learning rates now."""
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * self.fraction()))

    def step(self) -> None:
        self.steps_done += 1
        scale = self.scale()
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * scale

    def state_dict(self) -> dict[str, Any]:
        return {"schedule": "cosine", "base_lrs": list(self.base_lrs), "steps_done": self.steps_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("schedule") != "cosine":
            raise ValueError("this run was trained with the plateau schedule: resume it with --schedule plateau")
        self.base_lrs = list(state["base_lrs"])
        self.steps_done = int(state["steps_done"])
