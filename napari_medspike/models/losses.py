"""Training losses: segmentation (BCE + soft Dice) and SNN-to-ANN distribution alignment."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """``1 - soft Dice`` per image (sigmoid of ``logits`` vs a 0/1 ``target``), averaged."""
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1).to(prob.dtype)
    inter = (prob * target).sum(1)
    dice = (2 * inter + smooth) / (prob.sum(1) + target.sum(1) + smooth)
    return (1 - dice).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """BCE-with-logits + (1 - soft Dice), 1:1 (MODEL.md). ``target`` holds 0/1 (or soft targets in
    [0, 1], e.g. masks mixed with a teacher's probabilities), shape of logits."""
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
    target = target.to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, target) + soft_dice_loss(logits, target, smooth)


def distilled_targets(masks: torch.Tensor, teacher_logits: torch.Tensor, mix: float) -> torch.Tensor:
    """Soft targets for knowledge distillation: ``(1 - mix) * masks + mix * sigmoid(teacher_logits)``."""
    if masks.shape != teacher_logits.shape:
        raise ValueError(f"masks {tuple(masks.shape)} and teacher logits {tuple(teacher_logits.shape)} differ")
    return torch.lerp(masks.float(), torch.sigmoid(teacher_logits.detach().float()), mix)


def deep_supervision_loss(side_logits: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Mean :func:`segmentation_loss` of side-head logit maps against ``target`` [B, 1, H, W]
    average-pooled to each map's size (the fraction of foreground under each side pixel)."""
    if not side_logits:
        raise ValueError("deep supervision needs at least one side map")
    losses = [segmentation_loss(z.float(), F.adaptive_avg_pool2d(target.float(), z.shape[-2:])) for z in side_logits]
    return torch.stack(losses).mean()


def alignment_loss(
    snn_side_logits: Sequence[torch.Tensor],
    ann_side_logits: Sequence[torch.Tensor],
    stages: Sequence[int] = (0, 1, 2, 3),
    weight: float = 1.0,
) -> torch.Tensor:
    """Distribution-alignment loss between SNN and (frozen) ANN-twin side-head maps.

    For every stage index in ``stages`` (each counted once): ``KL(P_s || P_a) + mean((P_s -
    P_a)^2)`` where ``P = sigmoid(side logits)`` and the KL is that of the per-pixel Bernoulli
    distributions, averaged over pixels. Times ``weight``.

    The logarithms come from the logits (``log P = logsigmoid(z)``, ``log(1 - P) =
    logsigmoid(-z)``), so the loss and its gradient are finite for any logits. MODEL.md clamps P
    to ``[1e-8, 1 - 1e-8]`` instead, but ``1 - 1e-8`` is 1.0 in float32: from a logit of about 17
    on, ``(1 - P) log(1 - P)`` became ``0 * log 0`` = NaN.

    MODEL.md writes the KL as ``mean(P_s log(P_s / P_a))``, the foreground term alone. That
    term can be negative (P_s = 0.5, P_a = 0.9 gives -0.29) and is minimised at
    ``P_s = P_a / e``, not at ``P_a``; adding the background term ``(1 - P_s) log((1 - P_s) /
    (1 - P_a))`` makes it a true divergence: zero only when the maps agree, positive otherwise.
    The ANN maps are detached: the twin is a fixed teacher.
    """
    stage_list = sorted(set(int(s) for s in stages))
    if not stage_list:
        raise ValueError("stages must name at least one encoder stage")
    if len(snn_side_logits) != len(ann_side_logits):
        raise ValueError("SNN and ANN must give the same number of side maps")
    bad = [s for s in stage_list if not 0 <= s < len(snn_side_logits)]
    if bad:
        raise ValueError(f"stages {bad} out of range for {len(snn_side_logits)} side maps")
    total = snn_side_logits[0].new_zeros(())
    for s in stage_list:
        z_s, z_a = snn_side_logits[s].float(), ann_side_logits[s].detach().float()
        p_s, p_a = torch.sigmoid(z_s), torch.sigmoid(z_a)
        kl = p_s * (F.logsigmoid(z_s) - F.logsigmoid(z_a)) + (1 - p_s) * (F.logsigmoid(-z_s) - F.logsigmoid(-z_a))
        total = total + kl.mean() + (p_s - p_a).pow(2).mean()
    return total * weight


class FiringRatePenalty:
    """A spike budget for training: ``weight * relu(rate - max_rate)``, where ``rate`` is the mean
    firing rate of ``model``'s neurons (each neuron call's mean output, averaged over calls, as the
    trainer's validation reports it) in the forward pass run with gradients since the last call.
    Its gradient lowers the rate only where the network is over budget; under it the penalty is
    zero. A spiking model's energy grows with its spike count, so this trades accuracy for energy
    where the segmentation loss alone would spend spikes freely.

    Use as a context manager (hooks on every neuron, removed on exit); call it after the forward
    pass and before ``backward``. Integer LIF neurons on their fused training path take the
    penalty's gradient, a constant per element, inside their own backward pass
    (``IntegerLIF.rate_gradient``); other neurons get it through autograd. Not for activation
    checkpointing, whose recomputed forward passes would be counted again.
    """

    def __init__(self, model: torch.nn.Module, max_rate: float, weight: float = 1.0) -> None:
        from .neurons import SPIKING_NEURONS  # the losses above need no spiking code

        if not 0 <= max_rate < 1:
            raise ValueError(f"a firing-rate budget lies in [0, 1), got {max_rate}")
        if weight <= 0:
            raise ValueError(f"the firing-rate penalty's weight must be positive, got {weight}")
        self.max_rate, self.weight = float(max_rate), float(weight)
        self._neurons = [m for m in model.modules() if isinstance(m, SPIKING_NEURONS)]
        if not self._neurons:
            raise ValueError(f"{type(model).__name__} has no spiking neurons to hold to a firing-rate budget")
        # per neuron call: (module, its mean output, elements); the mean carries autograd's graph
        # only where the neuron cannot take the gradient itself
        self._calls: list[tuple[torch.nn.Module, torch.Tensor, int]] = []
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []

    def _record(self, module: torch.nn.Module, _args: tuple, out: torch.Tensor) -> None:
        if not torch.is_grad_enabled():  # training passes only, not validation or teachers
            return
        fused = getattr(module, "fused_backward", False)
        mean = out.detach().float().mean() if fused else out.float().mean()
        self._calls.append((module, mean, out.numel()))

    def _set_rate_gradients(self, values: dict[torch.nn.Module, float]) -> None:
        for m in self._neurons:
            if hasattr(m, "rate_gradient"):
                m.rate_gradient = values.get(m, 0.0)

    def __enter__(self) -> FiringRatePenalty:
        self._hooks = [m.register_forward_hook(self._record) for m in self._neurons]
        return self

    def __exit__(self, *exc: object) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks, self._calls = [], []
        self._set_rate_gradients({})

    def __call__(self) -> tuple[torch.Tensor, float]:
        """The penalty (a scalar; its gradient reaches every neuron) and the mean rate."""
        if not self._calls:
            raise RuntimeError("no neuron fired with gradients enabled since the last call: run a training "
                               "forward pass inside the `with` block first")
        calls, self._calls = self._calls, []
        rate = torch.stack([mean for _, mean, _ in calls]).mean()
        over = float(rate.detach()) > self.max_rate
        injected: dict[torch.nn.Module, float] = {}
        if over:  # d penalty / d output element = weight / (calls * elements of that call)
            for module, mean, numel in calls:
                if not mean.requires_grad:
                    share = self.weight / (len(calls) * numel)
                    if injected.setdefault(module, share) != share:
                        raise ValueError(f"{type(module).__name__} ran twice on outputs of different sizes in "
                                         "one pass; its fused gradient holds one value per pass")
        self._set_rate_gradients(injected)
        return self.weight * torch.relu(rate - self.max_rate), float(rate.detach())
