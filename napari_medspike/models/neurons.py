"""Neurons: spikingjelly's multi-step LIF, the integer-spike NISF, and the ANN twin's activations.

Every tensor in the models is laid out ``[T, B, C, H, W]`` (``T = 1`` for the single-pass models),
so each neuron here takes and returns that layout.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import nn

# spikingjelly, and later torch's FLOP counter and optimisers, probe for Triton; on CPU-only
# machines the warning each probe logs is noise. Quietened unless the user set that logger's
# level themselves.
_triton_log = logging.getLogger("torch._library.triton")
if _triton_log.level == logging.NOTSET:
    _triton_log.setLevel(logging.ERROR)

from spikingjelly.activation_based import neuron, surrogate  # noqa: E402

from . import fastpath  # noqa: E402

#: Largest integer spike count of the NISF neuron (MODEL.md: D = 4).
NISF_LEVELS = 4


class LIFNode(neuron.LIFNode):
    """spikingjelly's multi-step LIF with lean CPU paths for inference and training.

    GPUs use spikingjelly's own kernels (it picks CUDA/Triton itself). On the CPU spikingjelly
    runs a reference loop that records every per-step operation for autograd and stacks copies;
    here the same arithmetic runs in place (:func:`lif_charge_fire`), and under autograd a
    hand-written BPTT (:class:`_LIFSigmoidSurrogate`) saves one tensor instead of the recorded
    graph. Tests check identical spikes, potentials and gradients; BENCHMARKS.md has the
    speed-ups. ``fastpath.disabled()`` restores spikingjelly's path.
    """

    def _lean_path_applies(self, x_seq: torch.Tensor, args: tuple, kwargs: dict) -> bool:
        return (
            fastpath.enabled()
            and x_seq.device.type == "cpu"
            and x_seq.dtype == torch.float32
            and self.decay_input
            and self.v_reset == 0.0
            and not self.store_v_seq
            and not args
            and not kwargs
        )

    #: Spatial learning through time (:mod:`.sltt`). In its recording pass, the timesteps whose
    #: starting potentials to keep; in its replay pass, ``"replay"``. ``None`` otherwise.
    sltt_mode: list[int] | str | None = None
    #: The kept starting potentials ``[K, ...]`` (recording pass output, replay pass input).
    sltt_starts: torch.Tensor | None = None

    def multi_step_forward(self, x_seq: torch.Tensor, *args, **kwargs):  # type: ignore[override]
        if self.sltt_mode is not None:
            return self._sltt_forward(x_seq)
        if not self._lean_path_applies(x_seq, args, kwargs):
            return super().multi_step_forward(x_seq, *args, **kwargs)
        if not torch.is_grad_enabled():
            spikes, self.v, _ = lif_charge_fire(x_seq, self.v, self.tau, self.v_threshold)
            return spikes
        fresh = not isinstance(self.v, torch.Tensor)
        if fresh and self.detach_reset and isinstance(self.surrogate_function, surrogate.Sigmoid):
            spikes, v = _LIFSigmoidSurrogate.apply(
                x_seq, self.tau, self.v_threshold, self.surrogate_function.alpha
            )
            self.v = v
            return spikes
        return super().multi_step_forward(x_seq, *args, **kwargs)


    def _sltt_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Recording pass: the plain dynamics (no autograd), keeping the potential each chosen
        timestep starts from. Replay pass: one independent step per kept start, with a
        spatial-only surrogate gradient (:class:`_SpatialLIFStep`)."""
        if self.sltt_mode == "replay":
            if self.sltt_starts is None or self.sltt_starts.shape[0] != x_seq.shape[0]:
                raise RuntimeError("SLTT replay without matching recorded potentials")
            alpha = getattr(self.surrogate_function, "alpha", 4.0)
            return _SpatialLIFStep.apply(x_seq, self.sltt_starts, self.tau, self.v_threshold, alpha)
        starts: list[torch.Tensor] = []
        spikes, self.v, _ = lif_charge_fire(
            x_seq.detach(), self.v, self.tau, self.v_threshold, record_starts=(self.sltt_mode, starts)
        )
        self.sltt_starts = torch.stack(starts)
        return spikes


#: The CPU neuron loops run band by band, a band being rows of the image (dim -2) of about this
#: many bytes per timestep: a band's potential, inputs and outputs then stay in the CPU's cache
#: through all T timesteps and their five or so passes each, instead of streaming the whole
#: tensor from memory on every pass (an integer LIF on ``[4, 1, 128, 256, 256]`` floats: 20 ms
#: against 41 ms on 2 cores of an AMD EPYC; BENCHMARKS.md, "bf16 on the CPU, and neurons band by
#: band").
BAND_BYTES = 2 << 20


def row_bands(x_seq: torch.Tensor, band_bytes: int | None = None) -> list[tuple]:
    """Indices that split ``[T, ..., H, W]`` into bands of whole rows of about ``band_bytes``
    (default :data:`BAND_BYTES`) per timestep (``x_seq[band]``, and ``state[band]`` for a
    ``[..., H, W]`` state); a single index for everything when it is small, has fewer than 4
    dimensions or is not on the CPU. Bands keep a CPU core's cache warm; on a GPU they would only
    multiply the kernel launches (a timestep of 32 channels at 128², batch 8, is 16 MB: 8 bands,
    each with its own kernels)."""
    band_bytes = BAND_BYTES if band_bytes is None else band_bytes
    everything: list[tuple] = [(Ellipsis,)]
    if x_seq.device.type != "cpu" or x_seq.ndim < 4 or x_seq.shape[-2] < 2:
        return everything
    per_row = max(1, x_seq[0].numel() // x_seq.shape[-2] * x_seq.element_size())
    rows, height = max(1, band_bytes // per_row), x_seq.shape[-2]
    if rows >= height:
        return everything
    return [(Ellipsis, slice(r, r + rows), slice(None)) for r in range(0, height, rows)]


def lif_charge_fire(
    x_seq: torch.Tensor,
    v: float | torch.Tensor,
    tau: float,
    threshold: float,
    keep_charge: bool = False,
    record_starts: tuple[Sequence[int], list[torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """spikingjelly's multi-step LIF (decay_input, hard reset to 0) as an in-place loop.

    Charge ``h = v + (x - v) / tau``, spike ``h >= threshold``, reset ``v = h - h * s``. ``v``
    is the state before the first step (a float 0 for a fresh neuron). Returns the spikes
    ``[T, ...]``, the final state and, with ``keep_charge``, the pre-reset potentials ``h``
    (what a surrogate gradient needs). The charge is one fused ``lerp`` (a quarter fewer passes
    over memory than a subtraction and an addition); it equals spikingjelly's
    ``v + (x - v) / tau`` up to the last bit of rounding, so a spike whose potential lies within
    one rounding step of the threshold can differ (about one in 10^7; tests bound it).
    ``record_starts=(steps, out)`` appends to ``out`` a copy of the potential each of
    ``steps`` starts from (before its charge). Runs band by band (:func:`row_bands`) unless it
    records starts.
    """
    spikes = torch.empty_like(x_seq, memory_format=torch.preserve_format)
    charge = torch.empty_like(x_seq, memory_format=torch.preserve_format) if keep_charge else None
    carried = isinstance(v, torch.Tensor)
    if carried:
        v = v.expand_as(x_seq[0]).clone(memory_format=torch.preserve_format)
    else:
        v = torch.empty_like(x_seq[0], memory_format=torch.preserve_format)
    bands = row_bands(x_seq) if record_starts is None else [(Ellipsis,)]
    for band in bands:
        _lif_band(x_seq[band], v[band], spikes[band], None if charge is None else charge[band], tau, threshold,
                  carried, record_starts)
    return spikes, v, charge


def _lif_band(x_seq: torch.Tensor, v: torch.Tensor, spikes: torch.Tensor, charge: torch.Tensor | None, tau: float,
              threshold: float, carried: bool, record_starts: tuple[Sequence[int], list[torch.Tensor]] | None) -> None:
    """:func:`lif_charge_fire` on one band, in place (``v`` holds the carried state, or is
    written with the first charge from rest)."""
    if not carried:  # fresh state v = 0: the first charge is x / tau
        torch.div(x_seq[0], tau, out=v)
    for t in range(x_seq.shape[0]):
        if record_starts is not None and t in record_starts[0]:
            record_starts[1].append(v.clone() if t or carried else torch.zeros_like(v))
        if t or carried:
            v.lerp_(x_seq[t], 1.0 / tau)  # v + (x - v) / tau in one pass
        if charge is not None:
            charge[t].copy_(v)
        fired = torch.ge(v, threshold, out=spikes[t])  # 0/1 floats
        v.addcmul_(v, fired, value=-1.0)  # hard reset to 0: v - v * s (exact)


class _LIFSigmoidSurrogate(torch.autograd.Function):
    """Multi-step LIF from a fresh state with a sigmoid surrogate gradient and detached reset.

    Saves only the pre-reset potentials (one ``[T, ...]`` tensor) and runs BPTT by hand:
    ``g_h[t] = g_s[t] σ'(h[t] - θ) + g_v[t] (1 - s[t])``, ``g_x[t] = g_h[t] / tau``,
    ``g_v[t-1] = g_h[t] (1 - 1/tau)``, where ``σ' = α σ(α·)(1 - σ(α·))``. spikingjelly's CPU
    path records every per-step operation for autograd instead; tests check both give the same
    spikes and gradients.
    """

    @staticmethod
    def forward(ctx, x_seq: torch.Tensor, tau: float, threshold: float, alpha: float):  # type: ignore[override]
        spikes, v, charge = lif_charge_fire(x_seq.detach(), 0.0, tau, threshold, keep_charge=True)
        ctx.save_for_backward(charge)
        ctx.constants = (tau, threshold, alpha)
        ctx.mark_non_differentiable(v)
        return spikes, v

    @staticmethod
    def backward(ctx, grad_spikes: torch.Tensor, _grad_v: torch.Tensor | None):  # type: ignore[override]
        (charge,) = ctx.saved_tensors
        tau, threshold, alpha = ctx.constants
        grad_x = torch.empty_like(charge)
        for band in row_bands(charge):  # each band's gradients stay in the cache through time
            charge_b, grad_s, grad_x_b = charge[band], grad_spikes[band], grad_x[band]
            grad_v = None
            for t in reversed(range(charge.shape[0])):
                h = charge_b[t]
                sig = torch.sigmoid((h - threshold).mul_(alpha))
                grad_h = sig.mul_(1.0 - sig).mul_(alpha).mul_(grad_s[t])
                if grad_v is not None:
                    grad_h += grad_v.masked_fill_(h >= threshold, 0.0)
                torch.div(grad_h, tau, out=grad_x_b[t])
                grad_v = grad_h.mul_(1.0 - 1.0 / tau)
        return grad_x, None, None, None


class _SpatialLIFStep(torch.autograd.Function):
    """Independent LIF steps from given starting potentials, for SLTT's replay pass.

    ``h = v0 + (x - v0) / tau``, spikes ``h >= threshold``; the gradient reaches ``x`` only
    (``σ'(h - θ) / tau``): the starting potentials are constants, which is what detaching the
    membrane's path through time means.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, starts: torch.Tensor, tau: float, threshold: float, alpha: float):  # type: ignore[override]
        charge = torch.lerp(starts.to(x.dtype), x.detach(), 1.0 / tau)
        ctx.save_for_backward(charge)
        ctx.constants = (tau, threshold, alpha)
        return torch.ge(charge, threshold, out=torch.empty_like(charge))  # 0/1 floats, no bool copy

    @staticmethod
    def backward(ctx, grad_spikes: torch.Tensor):  # type: ignore[override]
        (charge,) = ctx.saved_tensors
        tau, threshold, alpha = ctx.constants
        sig = torch.sigmoid((charge - threshold).mul_(alpha))
        grad = sig.mul_(1.0 - sig).mul_(alpha / tau).mul_(grad_spikes)
        return grad, None, None, None, None


def lif_rate_window(timesteps: int, tau: float, threshold: float) -> tuple[float, float]:
    """The constant inputs between which a fresh LIF's rate over ``timesteps`` steps rises from
    0 to 1: it first fires (at the last step) from ``threshold / (1 - (1 - 1/tau)^T)`` and fires
    at every step from ``tau * threshold``."""
    return threshold / (1.0 - (1.0 - 1.0 / tau) ** timesteps), tau * threshold


class _LIFRateFunction(torch.autograd.Function):
    """Constant-input LIF rate forward (the SNN's own :func:`lif_charge_fire` on the input
    repeated over T, averaged); smooth sigmoid surrogate spanning the rate's rise."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, timesteps: int, tau: float, threshold: float):  # type: ignore[override]
        x = x.detach()
        spikes, _, _ = lif_charge_fire(x.expand(timesteps, *x.shape), 0.0, tau, threshold)
        ctx.save_for_backward(x)
        ctx.constants = (timesteps, tau, threshold)
        return spikes.mean(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        low, high = lif_rate_window(*ctx.constants)
        slope = 4.0 / (high - low)
        sig = torch.sigmoid((x - 0.5 * (low + high)) * slope)
        return sig.mul_(1.0 - sig).mul_(slope).mul_(grad), None, None, None


class LIFRate(nn.Module):
    """ANN stand-in for a LIF neuron: the firing rate a fresh LIF (tau 2, hard reset, same
    threshold) reaches over ``timesteps`` steps of a constant input, in ``{0, 1/T, ..., 1}``.

    The rate twin (:class:`~napari_medspike.models.medspikeformer.RateTwin`) uses it so that its
    weights, trained at the cost of one pass, carry over to the SNN (approximately: the SNN's
    inputs vary over time, a constant input does not), where a GELU twin's leave it almost
    silent. The gradient is a sigmoid surrogate spanning the rate's rise (:func:`lif_rate_window`).

    ``relaxed=True`` outputs the straight line through the rate's corners instead of its
    staircase: 0 below the window, 1 above it, linear in between, with its exact gradient (a
    clipped linear unit: what an ANN learns quickly, and one step from the staircase).
    """

    def __init__(self, timesteps: int = 4, tau: float = 2.0, threshold: float = 1.0, relaxed: bool = False) -> None:
        super().__init__()
        self.timesteps, self.tau, self.threshold = int(timesteps), float(tau), float(threshold)
        self.relaxed = bool(relaxed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.relaxed:
            low, high = lif_rate_window(self.timesteps, self.tau, self.threshold)
            return ((x - low) / (high - low)).clamp(0.0, 1.0)
        return _LIFRateFunction.apply(x, self.timesteps, self.tau, self.threshold)

    def extra_repr(self) -> str:
        relaxed = ", relaxed=True" if self.relaxed else ""
        return f"timesteps={self.timesteps}, tau={self.tau}, threshold={self.threshold}{relaxed}"


def make_lif() -> LIFNode:
    """Multi-step LIF of MODEL.md: tau 2, threshold 1, hard reset to 0, sigmoid surrogate (alpha 4).

    spikingjelly 2.0 chooses the kernel itself (a torch loop over T on CPU, CUDA/Triton on GPU).
    """
    return LIFNode(
        tau=2.0,
        decay_input=True,
        v_threshold=1.0,
        v_reset=0.0,
        surrogate_function=surrogate.Sigmoid(alpha=4.0),
        detach_reset=True,
        step_mode="m",
    )


def integer_lif_charge_fire(
    x_seq: torch.Tensor, tau: float, threshold: float, levels: int, keep_charge: bool = False,
    normalise: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The integer LIF's dynamics from rest (``v = 0``) as an in-place loop (no autograd): charge
    ``h = v + (x - v) / tau``, fire ``k = clamp(round(h / θ), 0, D)`` spikes, soft reset
    ``v = h - k θ``. Returns the counts ``k`` ``[T, ...]`` (``k / D`` with ``normalise``), the
    final state ``v`` and, with ``keep_charge``, the charges before each reset in units of the
    threshold, ``h / θ`` (what the gradient needs). Runs band by band (:func:`row_bands`).

    The loop keeps the potential in units of the threshold, ``u = v / θ``: charge
    ``u = (1 - 1/tau) u + x / (tau θ)``, fire ``k = clamp(round(u), 0, D)``, reset ``u -= k``.
    With ``tau θ = 1`` (tau 2, threshold 0.5) the charge is one ``add`` and the fire needs no
    division: five passes per timestep instead of six (BENCHMARKS.md, "Integer neurons in units
    of the threshold"). With powers of two for tau and θ that scaling is exact, so the counts
    equal those of ``h / θ`` computed directly up to the charge's last bit of rounding.
    """
    counts = torch.empty_like(x_seq, memory_format=torch.preserve_format)
    charge = torch.empty_like(x_seq, memory_format=torch.preserve_format) if keep_charge else None
    u = torch.empty_like(x_seq[0], memory_format=torch.preserve_format)
    decay = 1.0 - 1.0 / tau
    for band in row_bands(x_seq):
        x_b, u_b, counts_b = x_seq[band], u[band], counts[band]
        charge_b = None if charge is None else charge[band]
        for t in range(x_seq.shape[0]):
            if t == 0:  # the first charge from rest
                _divide(x_b[0], tau * threshold, out=u_b)
            elif tau * threshold == 1.0:
                torch.add(x_b[t], u_b, alpha=decay, out=u_b)
            else:  # two passes: decay, then add with 1/(tau θ) as its factor (no division into a buffer)
                u_b.mul_(decay).add_(x_b[t], alpha=1.0 / (tau * threshold))
            if charge_b is not None:
                charge_b[t].copy_(u_b)
            k = torch.round(u_b, out=counts_b[t]).clamp_(0, levels)
            u_b.sub_(k)
            if normalise:
                _divide(k, levels, out=k)
        u_b.mul_(threshold)  # the state in the neuron's own units
    return counts, u, charge


def _divide(x: torch.Tensor, divisor: float, out: torch.Tensor) -> torch.Tensor:
    """``x / divisor`` into ``out``: a copy for a divisor of 1, and a multiplication where
    ``1 / divisor`` is exact (a power of two, such as tau 2, threshold 0.5 and 4 levels): the
    same result, and a bf16 division is about a quarter slower than a multiplication on the CPU."""
    if divisor == 1.0:
        return out if out is x else out.copy_(x)
    mantissa, _ = math.frexp(divisor)
    if mantissa == 0.5:
        return torch.mul(x, 1.0 / divisor, out=out)
    return torch.div(x, divisor, out=out)


class _IntegerLIFFunction(torch.autograd.Function):
    """The integer LIF from a fresh state with its gradient written out (one saved tensor).

    ``g_h[t] = g_out[t] · w[t] / (D θ) + g_v[t]``, ``g_x[t] = g_h[t] / tau``,
    ``g_v[t-1] = g_h[t] (1 - 1/tau)``, where ``w`` is 1 inside the firing range
    ``-1/2 < h/θ < D + 1/2`` (straight-through) and 0 outside; the reset is detached.

    ``node.rate_gradient``, read when the backward pass runs, is added to every element of
    ``g_out``: the gradient of a penalty on the mean output (a firing-rate budget,
    :class:`~napari_medspike.models.losses.FiringRatePenalty`) at the cost of one pass, where
    autograd would record the mean and accumulate its expanded gradient into a new tensor."""

    @staticmethod
    def forward(ctx, x_seq: torch.Tensor, tau: float, threshold: float, levels: int,  # type: ignore[override]
                node: IntegerLIF | None = None):
        counts, v, charge = integer_lif_charge_fire(x_seq, tau, threshold, levels, keep_charge=True, normalise=True)
        ctx.save_for_backward(charge)
        ctx.constants = (tau, threshold, levels)
        ctx.node = node
        ctx.mark_non_differentiable(v)
        return counts, v

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor, _grad_v: torch.Tensor | None):  # type: ignore[override]
        (charge,) = ctx.saved_tensors
        tau, threshold, levels = ctx.constants
        extra = ctx.node.rate_gradient if ctx.node is not None else 0.0
        grad_x = torch.empty_like(charge)
        for band in row_bands(charge):  # each band's gradients stay in the cache through time
            charge_b, grad_out_b, grad_x_b = charge[band], grad_out[band], grad_x[band]
            grad_v: torch.Tensor | float = 0.0
            for t in range(charge.shape[0] - 1, -1, -1):
                u = charge_b[t]  # in units of the threshold
                inside = (u > -0.5) & (u < levels + 0.5)
                grad_in = grad_out_b[t].add(extra).mul_(inside) if extra else grad_out_b[t] * inside
                grad_h = grad_in.div_(levels * threshold).add_(grad_v)
                torch.div(grad_h, tau, out=grad_x_b[t])
                grad_v = grad_h.mul_(1.0 - 1.0 / tau)
        return grad_x, None, None, None, None


class _IntegerFire(torch.autograd.Function):
    """``clamp(round(u), 0, D)`` with a straight-through gradient inside ``(-1/2, D + 1/2)``."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, levels: int) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(u)
        ctx.levels = levels
        return torch.clamp(torch.round(u), 0, levels)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (u,) = ctx.saved_tensors
        return grad * ((u > -0.5) & (u < ctx.levels + 0.5)).to(grad.dtype), None


class IntegerLIF(LIFNode):
    """Multi-step LIF that fires up to ``max_spikes`` spikes per timestep (integer LIF).

    Charge as the binary LIF (``h = v + (x - v) / tau``), fire ``k = clamp(round(h / θ), 0, D)``
    spikes and subtract them (soft reset ``v = h - k θ``). The output is ``k / D``: D binary
    virtual sub-steps per timestep with k of them firing, so a layer after it does the work of
    k spikes (only additions) and its firing rate is the fraction of virtual sub-steps that fire.
    Four binary timesteps carry 5 levels per neuron; with D = 4 they carry 17, which is what
    lets the network fit many images (training/README.md, "Integer spikes"). Gradient:
    straight-through inside the firing range; the reset is detached. Not for SLTT.

    With the fast paths on, inference runs :func:`integer_lif_charge_fire` and training from a
    fresh state :class:`_IntegerLIFFunction`; otherwise (and on a carried state) a plain
    autograd loop (:meth:`reference_forward`), which tests hold them to.
    """

    #: Added to the gradient of every output element in the fused backward pass (a firing-rate
    #: penalty's gradient, set by :class:`~napari_medspike.models.losses.FiringRatePenalty`).
    rate_gradient: float = 0.0
    #: Whether the last forward pass ran the fused training path, which honours ``rate_gradient``.
    fused_backward: bool = False

    def __init__(self, max_spikes: int) -> None:
        if max_spikes < 2:
            raise ValueError(f"an integer LIF fires up to 2 or more spikes per step, got {max_spikes}")
        super().__init__(tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0,
                         surrogate_function=surrogate.Sigmoid(alpha=4.0), detach_reset=True, step_mode="m")
        self.max_spikes = int(max_spikes)

    def multi_step_forward(self, x_seq: torch.Tensor, *args, **kwargs) -> torch.Tensor:  # type: ignore[override]
        if self.sltt_mode is not None:
            raise ValueError("spatial learning through time (SLTT) needs binary spikes; train integer "
                             "spikes with full backpropagation through time (sltt 0)")
        if fastpath.enabled() and not isinstance(self.v, torch.Tensor) and self.v == 0:
            if not torch.is_grad_enabled():
                counts, self.v, _ = integer_lif_charge_fire(x_seq, self.tau, self.v_threshold, self.max_spikes,
                                                            normalise=True)
                return counts
            out, self.v = _IntegerLIFFunction.apply(x_seq, self.tau, self.v_threshold, self.max_spikes, self)
            self.fused_backward = True
            return out
        self.fused_backward = False
        return self.reference_forward(x_seq)

    def reference_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """The dynamics step by step with autograd recording them (any state, any device)."""
        v: float | torch.Tensor = self.v
        counts = []
        for t in range(x_seq.shape[0]):
            h = v + (x_seq[t] - v) / self.tau
            k = _IntegerFire.apply(h / self.v_threshold, self.max_spikes)
            v = h - k.detach() * self.v_threshold
            counts.append(k)
        self.v = v
        return torch.stack(counts) / self.max_spikes

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, max_spikes={self.max_spikes}"


class NISF(nn.Module):
    """Normalised Integer Spike-Fire neuron: ``round(clamp(x, 0, D)) / D`` (stateless).

    The integer spike count comes from spikingjelly's ``MultiLevelSpikeCount`` (straight-through
    gradient on ``[0, D]``); outputs lie in ``{0, 1/D, ..., 1}``.
    """

    def __init__(self, levels: int = NISF_LEVELS) -> None:
        super().__init__()
        self.levels = levels
        self.count = surrogate.MultiLevelSpikeCount(levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.count(x) / self.levels

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


def make_neuron(kind: str, gate: bool = False) -> nn.Module:
    """The non-linearity for a model family.

    ``kind`` is ``"lif"`` (MedSpikeFormer), ``"ann"`` (its ANN twin: sigmoid for the Q/K/V
    gates, GELU elsewhere), ``"lif_rate"`` (its rate twin: :class:`LIFRate` everywhere) or
    ``"nisf"`` (MedQKFormer). ``gate`` marks Q/K/V gates.
    """
    if kind == "lif":
        return make_lif()
    if kind == "ann":
        return nn.Sigmoid() if gate else nn.GELU()
    if kind == "nisf":
        return NISF()
    if kind == "lif_rate":
        return LIFRate()
    raise ValueError(f"unknown neuron kind {kind!r}; expected 'lif', 'ann', 'lif_rate' or 'nisf'")


SPIKING_NEURONS: tuple[type[nn.Module], ...] = (neuron.LIFNode, NISF)
"""Module types whose outputs are spikes (binary or normalised integer)."""
