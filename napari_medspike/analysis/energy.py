"""Energy accounting with the SNN field's convention (MODEL.md).

Every synaptic operation (convolution, matrix product) is observed as it runs, with the module it
belongs to. An operation whose input is analog costs ``MACs · E_MAC``; one fed spikes costs
``SOPs · E_AC`` with ``SOPs = mean spike count per input element · MACs`` over all timesteps
(binary spikes: firing rate · T · per-timestep MACs; NISF: mean integer count · MACs).
The dense-network reference is the ANN twin (MedSpikeFormer) or the same network run as an ANN
(MedQKFormer): its ``MACs · E_MAC``.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from collections.abc import Iterator
from typing import Any

import torch
from spikingjelly.activation_based import monitor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry
from torch.utils.module_tracker import ModuleTracker

from ..models import fastpath
from ..models.attention import block_density
from ..models.base import Segmenter, evaluation_mode, pad_to_stride
from ..models.neurons import SPIKING_NEURONS

#: Energy of one multiply-accumulate and one accumulate, 45 nm CMOS (Horowitz 2014), in pJ.
E_MAC_PJ = 4.6
E_AC_PJ = 0.9

_SYNAPTIC_OPS = {
    torch.ops.aten.convolution,
    torch.ops.aten.mm,
    torch.ops.aten.bmm,
    torch.ops.aten.addmm,
    torch.ops.aten.baddbmm,
}


def weighted_rate(rates: dict[str, float], neurons: dict[str, int], names: Any = None) -> float:
    """The firing rate of a part of the network: its spikes over its neurons and timesteps,
    i.e. its layers' rates weighted by their sizes (``neurons``, outputs per pass), over the
    layers in ``names`` (default: all). NaN where there are none. A plain mean of layer rates
    let a small layer count as much as a large one (MedQKFormer's inactive-weight layer, firing
    at 0.93 on an eighth of its neighbours' outputs, lifted its stage from 0.11 to 0.18)."""
    chosen = [name for name in (rates if names is None else names) if name in rates]
    total = sum(neurons.get(name, 0) for name in chosen)
    if not total:
        return math.nan
    return sum(float(rates[name]) * neurons.get(name, 0) for name in chosen) / total


def in_stage(name: str, index: int) -> bool:
    """Whether the module path ``name`` lies in encoder stage ``index`` (a routed model's
    experts too: ``experts.N.stages.i.``)."""
    return name.startswith(f"stages.{index}.") or f".stages.{index}." in name


def spike_levels(model: Segmenter) -> int:
    """Spike counts per output of the model's neurons: 1 (LIF), 4 (NISF), 0 (ANN, no spikes)."""
    return model.spike_levels if model.spiking else 0


def _spike_count_rate(x: torch.Tensor, levels: int) -> float | None:
    """Mean spike count per element if ``x`` holds spikes ``{0, 1/L, .., 1}``, else None."""
    if levels == 0 or not x.is_floating_point() or x.numel() == 0:
        return None
    lo, hi = torch.aminmax(x)
    if lo < 0 or hi > 1:
        return None
    counts = x * levels
    if not torch.equal(counts, counts.round()):
        return None
    return float(counts.mean(dtype=torch.float64))


@dataclass
class LayerEnergy:
    """One layer's synaptic work. ``input_rate`` is None for analog input."""

    name: str
    op: str
    macs: int
    input_rate: float | None
    sops: float
    energy_pj: float


@dataclass
class EnergyReport:
    """Per-layer work, firing rates and the energy estimate of one forward pass."""

    arch: str
    timesteps: int
    input_shape: tuple[int, ...]
    layers: list[LayerEnergy]
    firing_rates: dict[str, float]
    ann_macs: int
    e_mac_pj: float = E_MAC_PJ
    e_ac_pj: float = E_AC_PJ
    stage_firing_rates: list[float] = field(default_factory=list)
    #: Outputs of each spiking layer in this pass (the weights of :func:`weighted_rate`).
    neurons: dict[str, int] = field(default_factory=dict)
    #: Spikes a neuron output can carry per timestep (1 binary; D for integer spikes).
    levels: int = 1

    @property
    def analog_macs(self) -> int:
        """Multiply-accumulates fed analog values (the encoding layer), per pass."""
        return sum(layer.macs for layer in self.layers if layer.input_rate is None)

    @property
    def sops(self) -> float:
        """Synaptic operations, per pass: accumulates fed spikes, each spike counted once per MAC it drives."""
        return sum(layer.sops for layer in self.layers)

    @property
    def energy_pj(self) -> float:
        """The estimated energy of one pass, in picojoules (MACs at ``e_mac_pj``, SOPs at ``e_ac_pj``)."""
        return sum(layer.energy_pj for layer in self.layers)

    @property
    def ann_energy_pj(self) -> float:
        """The dense-network reference's energy for the same pass, in picojoules (all its MACs at ``e_mac_pj``)."""
        return self.ann_macs * self.e_mac_pj

    @property
    def mean_firing_rate(self) -> float:
        """Spikes over neurons and (virtual) timesteps of the whole network (:func:`weighted_rate`)."""
        return weighted_rate(self.firing_rates, self.neurons) if self.firing_rates else float("nan")

    @property
    def spikes_per_neuron_step(self) -> float:
        """Mean spike count of a neuron output per timestep: the rate times the levels (for
        integer spikes, whose rate counts each of a timestep's D virtual steps)."""
        return self.mean_firing_rate * self.levels

    @property
    def layer_mean_firing_rate(self) -> float:
        """The plain mean of the layers' rates (each layer alike, whatever its size), as the
        training's spike budget counts."""
        rates = list(self.firing_rates.values())
        return sum(rates) / len(rates) if rates else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary with the per-layer table."""
        out = asdict(self)
        out.update(
            analog_macs=self.analog_macs,
            sops=self.sops,
            energy_pj=self.energy_pj,
            ann_energy_pj=self.ann_energy_pj,
            mean_firing_rate=self.mean_firing_rate,
            spikes_per_neuron_step=self.spikes_per_neuron_step,
            layer_mean_firing_rate=self.layer_mean_firing_rate,
        )
        return out

    def summary(self) -> str:
        """A few lines for people: totals, ratio to the ANN, firing rate per stage."""
        lines = [
            f"{self.arch} on {list(self.input_shape)} (T={self.timesteps})",
            f"  analog MACs {self.analog_macs / 1e9:.3f} G, synaptic ops {self.sops / 1e9:.3f} G",
            f"  energy {self.energy_pj / 1e9:.3f} mJ vs dense ANN {self.ann_energy_pj / 1e9:.3f} mJ"
            f" ({self.energy_pj / max(self.ann_energy_pj, 1e-12):.1%})",
            f"  firing rate {self.mean_firing_rate:.3f} (spikes over neurons and timesteps"
            + (f" x {self.levels} virtual steps: {self.spikes_per_neuron_step:.3f} spikes per neuron and timestep)"
               if self.levels > 1 else ")"),
            "  counted: synaptic operations only (neuron updates, unfolded norms and additions are not)",
        ]
        if self.stage_firing_rates:
            rates = ", ".join(f"{r:.3f}" for r in self.stage_firing_rates)
            lines.append(f"  firing rate per encoder stage: {rates}")
        return "\n".join(lines)


class _SynapticOpRecorder(TorchDispatchMode):
    """Records MACs and input spike rate of each convolution / matrix product."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps a mode's __torch_dispatch__ to keep torch.compile out of it, and that
        # wrapper imports torch._dynamo (about 800 modules, 1.5 s with the GIL held: a frozen
        # napari) on the first call. Nothing is compiled here: no wrapper, no import.
        return False

    def __init__(self, tracker: ModuleTracker, root_name: str, levels: int, analog_layers: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.tracker, self.root, self.levels = tracker, root_name, levels
        self.analog_layers = analog_layers
        self.layers: list[LayerEnergy] = []

    def _reads_analog(self, owner: str) -> bool:
        """Whether ``owner`` is (inside) one of :attr:`analog_layers`, also below a prefix such
        as a routed model's ``experts.1.``."""
        return any(f".{layer}." in f".{owner}." for layer in self.analog_layers)

    def _owner(self) -> str:
        name = max(self.tracker.parents, key=len)
        return name[len(self.root) + 1 :] if name.startswith(self.root + ".") else name

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet in _SYNAPTIC_OPS:
            # (a block-diagonal product of attention heads: only the blocks are real work)
            macs = int(flop_registry[packet](*args, **kwargs, out_val=out) // 2 * block_density())
            operands = args[:1] if packet is torch.ops.aten.convolution else args[:2]
            if packet in (torch.ops.aten.addmm, torch.ops.aten.baddbmm):
                operands = args[1:3]
            owner = self._owner()
            rates = [] if self._reads_analog(owner) else [_spike_count_rate(t, self.levels) for t in operands]
            rates = [r for r in rates if r is not None]
            rate = min(rates) if rates else None
            op = "conv" if packet is torch.ops.aten.convolution else "matmul"
            if rate is None:
                layer = LayerEnergy(owner, op, macs, None, 0.0, macs * E_MAC_PJ)
            else:
                sops = rate * macs
                layer = LayerEnergy(owner, op, macs, rate, sops, sops * E_AC_PJ)
            self.layers.append(layer)
        return out


def count_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Dense multiply-accumulates of one forward pass (convolutions and matrix products),
    counted by the same recorder as the synaptic operations (torch's ``FlopCounterMode`` gives
    the same totals but imports about 800 modules, a second's freeze of napari, on first use)."""
    with torch.no_grad(), fastpath.disabled(), record_synaptic_ops(0) as layers:
        model(x)
    return sum(layer.macs for layer in layers)


@contextlib.contextmanager
def record_synaptic_ops(levels: int, root: torch.nn.Module | None = None,
                        analog_layers: tuple[str, ...] = ()) -> Iterator[list[LayerEnergy]]:
    """Record every convolution / matrix product run inside the block as a :class:`LayerEnergy`.

    ``levels`` is the spike count of a full spike (1 for LIF, 4 for NISF, 0 for an ANN: all
    input analog). Layer names are module paths below ``root`` when given. An operation is fed
    spikes when its input's values are spike counts, except in ``analog_layers`` (module paths,
    e.g. the encoding layer), which always read analog values. Use under ``torch.no_grad()``,
    not ``inference_mode`` (which hides the aten ops counted here).
    """
    with ModuleTracker() as tracker:
        recorder = _SynapticOpRecorder(tracker, type(root).__name__ if root else "", levels, analog_layers)
        with recorder:
            yield recorder.layers


@torch.no_grad()  # not inference_mode: it hides the decomposed aten ops we count
def estimate_energy(model: Segmenter, x: torch.Tensor) -> EnergyReport:
    """Run ``model`` on ``x`` ([B, C, H, W] in [0, 1]) and account its synaptic work and energy.

    Per-layer firing rates come from spikingjelly's ``OutputMonitor`` on every neuron. The
    accounting follows the architecture as specified (MODEL.md), so the model runs its plain
    path here, not the algebraically merged inference fast paths (which do fewer MACs). A routed
    model counts the work of every expert that ran (the starting one runs on every image).
    Only synaptic operations are counted, as is the field's convention: neuron updates, norms
    not folded into a convolution, additions and memory traffic are not, for either network.
    It runs in fp32 whatever autocast the caller is under.
    """
    levels = spike_levels(model)
    # the model's lock before the monitors: another job's passes (Segment's, in another thread)
    # waiting for it or holding it are not recorded as this one's
    # fp32 even under a caller's autocast: a bf16 spike k/5 is not k/5 exactly, and its products
    # were counted as analog MACs (the energy of `spiking` rose from 33 % to 38 % of its twin's)
    with model._forward_lock, evaluation_mode(model), torch.autocast(x.device.type, enabled=False):
        with monitor.OutputMonitor(model, SPIKING_NEURONS, lambda y: (float(y.float().mean()), y.numel())) as mon:
            with record_synaptic_ops(levels, model, (model.encoding_layer,)) as layers, fastpath.disabled():
                model(x)
        firing: dict[str, list[tuple[float, int]]] = defaultdict(list)
        for name in mon.monitored_layers:
            firing[name].extend(mon[name])
    # each layer's rate over all its calls (weighted by their sizes), and its outputs in all
    rates = {name: sum(r * n for r, n in v) / max(sum(n for _, n in v), 1) for name, v in firing.items() if v}
    neurons = {name: sum(n for _, n in v) for name, v in firing.items() if v}
    stage_rates = [weighted_rate(rates, neurons, [n for n in rates if in_stage(n, i)])
                   for i in range(len(getattr(model, "stages", [])))]
    padded, _ = pad_to_stride(x)
    reference = model.dense_reference().to(x.device)
    ann_macs = count_macs(reference, padded)
    return EnergyReport(
        arch=model.arch,
        timesteps=model.timesteps,
        input_shape=tuple(x.shape),
        layers=layers,
        firing_rates=rates,
        ann_macs=ann_macs,
        stage_firing_rates=stage_rates,
        neurons=neurons,
        levels=max(levels, 1),
    )
