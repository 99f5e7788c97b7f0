"""Decomposed attention: SDSA (MedSpikeFormer and its ANN twin) and SDQK-A (MedQKFormer).

Names used everywhere: the four *interactions* ``AA, AI, IA, II`` pair the activated (A) or
inactivated (I) part of Q with that of K.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from . import fastpath
from .blocks import (ConvBN, DepthwiseSeparable, MLP, Neuron, bn_affine, fire, fold_batchnorm, optional_neuron,
                     seq_apply)
from .neurons import NISF

INTERACTIONS: tuple[str, ...] = ("AA", "AI", "IA", "II")

#: The interactions in the order their sums pair them (``O_AA + O_II``, ``O_AI + O_IA``), as
#: indices into :data:`INTERACTIONS`: the eval fast path stacks them so.
PAIRED_ORDER: tuple[int, int, int, int] = (0, 3, 1, 2)


def paired_channels(channels: int, device: torch.device | None = None) -> torch.Tensor:
    """Indices that reorder a ``4C`` stack of the interactions (:data:`INTERACTIONS` order) into
    :data:`PAIRED_ORDER`."""
    return torch.cat([torch.arange(i * channels, (i + 1) * channels, device=device) for i in PAIRED_ORDER])


_block = threading.local()


def block_density() -> float:
    """The fraction of a matrix product's multiply-accumulates that are real work, for energy
    accounting: the heads of :func:`decomposed_channel_attention` are computed as one
    block-diagonal ``C x C`` product, of which only ``1 / heads`` lies inside a head (the rest
    multiplies structural zeros). 1 outside it."""
    return getattr(_block, "density", 1.0)


@contextlib.contextmanager
def _block_diagonal(heads: int) -> Iterator[None]:
    before = block_density()
    _block.density = 1.0 / heads
    try:
        yield
    finally:
        _block.density = before


def head_mask(channels: int, heads: int, device: torch.device | None = None) -> torch.Tensor:
    """``[C, C]`` block-diagonal 0/1 matrix: 1 where two channels belong to the same head."""
    head = torch.arange(channels, device=device) // (channels // heads)
    return (head[:, None] == head[None, :]).float()


def decomposed_channel_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    affine: tuple[torch.Tensor, torch.Tensor] | None = None,
    order: tuple[int, int, int, int] = (0, 1, 2, 3),
) -> torch.Tensor:
    """The four SDSA interactions ``O = (q_x k_yᵀ) · C^-1/2 · v`` for x, y in {A, I}.

    ``q, k, v`` are ``[T, B, C, H, W]``; returns ``[T, B, 4C, H, W]`` with the interactions
    stacked along channels in the order of :data:`INTERACTIONS`. Each head's ``d x d``
    channel-attention matrix mixes channels only, never pixels (cost O(N d^2)). With
    ``Q_I = 1 - Q`` and ``K_I = 1 - K`` all four matrices follow from one product:
    ``AI = s_q 1ᵀ - AA``, ``IA = 1 s_kᵀ - AA``, ``II = N - s_q 1ᵀ - 1 s_kᵀ + AA`` where
    ``s_q, s_k`` are the per-channel sums over pixels.

    The heads are kept as a block-diagonal ``C x C`` matrix, so the output is one matrix product
    per image and timestep on pixel-major data (``[N, C] @ [C, 4C]``) and comes out
    channels-last, ready for the depth-wise convolutions that follow, with no transposing copy.
    The statistics are computed in fp32 even under autocast: ``AI`` and ``II`` subtract
    counts of up to N, which bf16 cannot hold.

    ``affine=(scale, shift)`` (``[4C]`` each) returns ``O * scale + shift`` per output channel,
    folded into the product (an eval-mode batch norm on ``O`` at no extra pass).
    ``order`` stacks the interactions in another order (indices into :data:`INTERACTIONS`);
    ``affine`` is then given in that order too.
    """
    t, b, c, h, w = v.shape
    n = h * w
    with torch.autocast(q.device.type, enabled=False):
        qf, kf = q.flatten(3).float(), k.flatten(3).float()  # [T, B, C, N]
        mask = head_mask(c, heads, q.device)
        with _block_diagonal(heads):  # (for energy accounting: d x d per head)
            aa = (qf @ kf.transpose(-2, -1)) * mask  # [T, B, C, C], zero across heads
        sq = qf.sum(-1).unsqueeze(-1) * mask  # s_q 1ᵀ within each head
        sk = kf.sum(-1).unsqueeze(-2) * mask  # 1 s_kᵀ within each head
        four = (aa, sq - aa, sk - aa, n * mask - sq - sk + aa)
        m = torch.stack([four[i] for i in order], dim=2)  # [T, B, 4, C, C]
        m = m * c**-0.5
    # out[n, g*C + i] = sum_j m[g, i, j] v[j, n]
    mix = m.permute(0, 1, 4, 2, 3).reshape(t, b, c, 4 * c)
    pixels = v.flatten(3).transpose(-2, -1)  # [T, B, N, C]
    if affine is None:
        with _block_diagonal(heads):
            out = pixels @ mix.to(v.dtype)  # [T, B, N, 4C]
    else:
        scale, shift = affine
        lhs, rhs, bias = pixels.flatten(0, 1), (mix * scale).to(v.dtype).flatten(0, 1), shift.to(v.dtype)
        if v.device.type == "cpu" and not torch.is_grad_enabled():
            # one addmm per image and timestep into one output: baddbmm first copies the expanded
            # shift into its output, an extra pass over [N, 4C] (fp32 at 256²: 50 ms against 30 ms)
            out = torch.empty(t * b, n, 4 * c, dtype=v.dtype, device=v.device)
            for i in range(t * b):
                torch.addmm(bias, lhs[i], rhs[i], out=out[i])
        else:
            out = torch.baddbmm(bias.expand(t * b, n, 4 * c), lhs, rhs)
        out = out.unflatten(0, (t, b))
    return out.transpose(-2, -1).unflatten(-1, (h, w))


class SDSA(nn.Module):
    """Spike-based Decomposed Self-Attention (``kind="lif"``) or its ANN twin (``kind="ann"``).

    Q, K, V = neuron(BN(depth-wise 3x3 conv(x))) from one grouped conv; the four interactions
    (:func:`decomposed_channel_attention`) each go through their own depth-wise separable
    block (run side by side as one grouped block); then
    ``concat(O_AA + O_II, O_AI + O_IA) -> 1x1 conv (2C -> C) + V -> BN -> MLP + residual``.

    Spike-driven layout (``spike_driven=True``): the input fires before the Q/K/V conv, the
    interaction maps ``O`` go through a norm and a neuron before their blocks, the sums fire
    before the projection, and the MLP fires before each conv, so every convolution reads spikes.

    Set :attr:`record` to a dict to capture Q/K/V spikes and the raw interaction maps ``O``.
    """

    def __init__(self, channels: int, kind: str, timesteps: int, heads: int = 4, spike_driven: bool = False) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.channels, self.heads, self.spike_driven = channels, heads, spike_driven
        self.recorded_channels = channels  # of each recorded spike tensor (Q, K, V)
        self.input_neuron = optional_neuron(spike_driven, kind, timesteps)
        # One depth-wise conv with three outputs per channel: q, k, v interleaved.
        self.qkv = ConvBN(channels, 3 * channels, 3, groups=channels)
        self.qkv_neuron = Neuron(kind, timesteps, gate=True)
        self.interaction_norm = nn.BatchNorm2d(4 * channels) if spike_driven else None
        self.interaction_neuron = optional_neuron(spike_driven, kind, timesteps)
        self.interaction_blocks = DepthwiseSeparable(4 * channels, kind, timesteps, branches=4)
        self.project_neuron = optional_neuron(spike_driven, kind, timesteps)
        self.project = nn.Conv2d(2 * channels, channels, 1)
        self.norm = nn.BatchNorm2d(channels)
        self.mlp = MLP(channels, channels, kind, timesteps, spike_driven=spike_driven)
        self.record: dict[str, torch.Tensor] | None = None

    def _merged_tail(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The interaction blocks' point-wise convs, the two sums and the 2C -> C projection are
        all linear after the blocks' neurons, so
        ``project(cat(O_AA + O_II, O_AI + O_IA)) == conv_4C->C(spikes)``: returns that dense
        conv's weight ``[C, 4C, 1, 1]`` and bias, built from the original parameters (so
        gradients reach them). One dense conv costs 4C² MACs per pixel instead of 6C², needs
        no 4C-channel intermediate, and its backward is a plain matrix product where the
        grouped conv's is slow on the CPU."""
        c = self.channels
        pointwise = self.interaction_blocks.pointwise  # 4 groups of C -> C
        w_groups = pointwise.weight.reshape(4, c, c)
        b_groups = pointwise.bias.reshape(4, c)
        same, cross = self.project.weight.reshape(c, 2 * c).split(c, dim=1)
        halves = (same, cross, cross, same)  # AA, AI, IA, II
        weight = torch.cat([half @ w for half, w in zip(halves, w_groups)], dim=1)
        bias = self.project.bias + sum(half @ b for half, b in zip(halves, b_groups))
        return weight.reshape(c, 4 * c, 1, 1), bias

    def _spike_driven_tail(self, raw: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``O -> norm -> neuron -> interaction blocks -> sums -> neuron -> projection + V -> norm``.

        With the fast paths on (training too), the blocks' grouped point-wise convs and the two
        sums run as one dense conv (:meth:`_merged_sums`), whose backward is a plain matrix
        product where the grouped conv's is slow on the CPU."""
        spikes = self.interaction_neuron(seq_apply(self.interaction_norm, raw))
        if fastpath.enabled():
            sums = self._merged_interaction_sums(spikes)
        else:
            o_aa, o_ai, o_ia, o_ii = self.interaction_blocks(spikes).chunk(4, dim=2)
            sums = torch.cat((o_aa + o_ii, o_ai + o_ia), dim=2)
        return seq_apply(self.norm, seq_apply(self.project, self.project_neuron(sums)) + v)

    def _merged_sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The interaction blocks' grouped point-wise convs and the two sums
        ``(O_AA + O_II, O_AI + O_IA)`` as one dense ``4C -> 2C`` conv (weight ``[2C, 4C, 1, 1]``
        with zero blocks, and bias): a plain matrix product instead of a slow grouped conv, a
        concatenation and two additions."""
        c = self.channels
        pointwise = self.interaction_blocks.pointwise
        w = pointwise.weight.reshape(4, c, c)
        b = pointwise.bias.reshape(4, c)
        zero = w.new_zeros(c, c)
        weight = torch.cat((torch.cat((w[0], zero, zero, w[3]), 1), torch.cat((zero, w[1], w[2], zero), 1)), 0)
        return weight.reshape(2 * c, 4 * c, 1, 1), torch.cat((b[0] + b[3], b[1] + b[2]))

    def _merged_interaction_sums(self, spikes: torch.Tensor) -> torch.Tensor:
        """The interaction blocks on ``spikes`` followed by the two sums, with the point-wise
        convs and sums as one dense conv (:meth:`_merged_sums`): ``[T, B, 2C, H, W]``."""
        blocks = self.interaction_blocks
        weight, bias = self._merged_sums()
        return seq_apply(lambda s: F.conv2d(s, weight, bias), blocks.neuron(seq_apply(blocks.depthwise, spikes)))

    def _paired_interaction_sums(self, spikes: torch.Tensor) -> torch.Tensor:
        """Eval-mode :meth:`_merged_interaction_sums` on spikes stacked in the order
        :data:`PAIRED_ORDER` (AA, II, AI, IA): each sum then reads one contiguous half of the
        channels, so the point-wise convs and sums run as one 1x1 conv of two groups (2C -> C
        each), half the multiply-adds of the dense 4C -> 2C conv with its zero blocks."""
        c = self.channels
        blocks = self.interaction_blocks
        channels = paired_channels(c, spikes.device)
        dw_weight, dw_bias = fold_batchnorm(blocks.depthwise[0], blocks.depthwise[1])
        depthwise = blocks.depthwise[0]
        fired = blocks.neuron(seq_apply(lambda s: F.conv2d(s, dw_weight[channels], dw_bias[channels], depthwise.stride,
                                                           depthwise.padding, depthwise.dilation, 4 * c), spikes))
        w = blocks.pointwise.weight.reshape(4, c, c)
        b = blocks.pointwise.bias.reshape(4, c)
        weight = torch.cat([torch.cat((w[i], w[j]), 1) for i, j in ((0, 3), (1, 2))]).reshape(2 * c, 2 * c, 1, 1)
        bias = torch.cat((b[0] + b[3], b[1] + b[2]))
        return seq_apply(lambda s: F.conv2d(s, weight, bias, groups=2), fired)

    def _spike_driven_fast_tail(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode :meth:`_spike_driven_tail` with the norms folded in (the first into the
        attention product, the second into the projection) and the point-wise convs and sums
        as one two-group conv (:meth:`_paired_interaction_sums`). Returns the output and the
        raw interaction maps (in :data:`INTERACTIONS` order)."""
        c = self.channels
        scale, shift = bn_affine(self.interaction_norm)
        channels = paired_channels(c, scale.device)
        normed = decomposed_channel_attention(q, k, v, self.heads, affine=(scale[channels], shift[channels]),
                                              order=PAIRED_ORDER)
        # the record keeps O itself (one more product, only when recording)
        raw = None if self.record is None else decomposed_channel_attention(q, k, v, self.heads)
        attn = self.project_neuron(self._paired_interaction_sums(self.interaction_neuron(normed)))
        scale, shift = bn_affine(self.norm)
        weight = self.project.weight * scale.reshape(-1, 1, 1, 1)
        out = seq_apply(lambda s: F.conv2d(s, weight, self.project.bias * scale + shift), attn)
        return torch.addcmul(out, v, scale.reshape(-1, 1, 1)), raw

    def _split_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Eval-mode Q, K, V from three depth-wise convs (norm folded in) instead of one grouped
        conv with three outputs per channel, which the CPU's kernels run about three times slower
        (54 ms against about 11 ms for the first stage at 256², T = 4, on channels-last input).
        Their outputs, side by side, go through the Q/K/V neuron in one call, as before."""
        conv = self.qkv[0]
        weight, bias = fold_batchnorm(conv, self.qkv[1])
        flat = x.flatten(0, 1)
        if x.device.type == "cpu":  # one copy: channels-last, and in autocast's dtype (else each conv casts)
            dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else flat.dtype
            flat = flat.to(dtype=dtype, memory_format=torch.channels_last)
        # the grouped conv's outputs are interleaved (q, k, v) per input channel
        parts = [F.conv2d(flat, weight[j::3], bias[j::3], conv.stride, conv.padding, conv.dilation, self.channels)
                 for j in range(3)]
        q, k, v = self.qkv_neuron(torch.cat(parts, 1).unflatten(0, x.shape[:2])).chunk(3, dim=2)
        return q, k, v

    def _tail_norms_frozen(self) -> bool:
        """Whether every norm that :meth:`_spike_driven_fast_tail` folds in is in eval mode (one of
        them training, e.g. frozen parts of a fine-tune that are not the whole block: the plain
        path, else the others would be folded with their running statistics and never update)."""
        norms = (self.norm, self.interaction_norm, self.interaction_blocks.depthwise[1])
        return not any(norm.training for norm in norms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.channels
        if fastpath.enabled() and not self.qkv[1].training:
            q, k, v = self._split_qkv(fire(self.input_neuron, x))
        else:
            qkv = self.qkv_neuron(seq_apply(self.qkv, fire(self.input_neuron, x)))  # [T, B, 3C, H, W], interleaved
            q, k, v = qkv.unflatten(2, (c, 3)).unbind(3)
        if self.spike_driven and fastpath.enabled() and self._tail_norms_frozen():
            out, raw = self._spike_driven_fast_tail(q, k, v)
            out = self.mlp(out) + out
            if self.record is not None:
                self._record(q, k, v, raw)
            return out
        raw = decomposed_channel_attention(q, k, v, self.heads)
        if self.spike_driven:
            out = self._spike_driven_tail(raw, v)
        elif not fastpath.enabled():
            o = self.interaction_blocks(raw)
            o_aa, o_ai, o_ia, o_ii = o.chunk(4, dim=2)
            attn = torch.cat((o_aa + o_ii, o_ai + o_ia), dim=2)
            out = seq_apply(self.norm, seq_apply(self.project, attn) + v)
        else:
            blocks = self.interaction_blocks
            spikes = blocks.neuron(seq_apply(blocks.depthwise, raw))
            weight, bias = self._merged_tail()
            if not self.norm.training:  # fold the norm in too: BN(z + v) = scale*z + shift + scale*v
                scale, shift = bn_affine(self.norm)
                weight, bias = weight * scale.reshape(-1, 1, 1, 1), bias * scale + shift
            out = seq_apply(lambda s: F.conv2d(s, weight, bias), spikes)
            if self.norm.training:
                out = seq_apply(self.norm, out + v)
            else:
                out = torch.addcmul(out, v, scale.reshape(-1, 1, 1))
        out = self.mlp(out) + out
        if self.record is not None:
            self._record(q, k, v, raw)
        return out

    def _record(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, raw: torch.Tensor) -> None:
        self.record.update(q=q.detach(), k=k.detach(), v=v.detach())
        for name, o_raw in zip(INTERACTIONS, raw.detach().chunk(4, dim=2)):
            self.record[name] = o_raw


class MaskSpikeConv(nn.Module):
    """MedQKFormer's residual NISF conv block: two (NISF -> 3x3 conv + BN) units sharing one BN.

    ``x -> BN(conv1(NISF(x)) + x) -> BN(conv2(NISF(.)) + x)`` (the residual is the block input
    both times), as in the reference whose parameter count we reproduce.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.neuron1, self.conv1 = NISF(), ConvBN(channels, channels, 3)
        self.neuron2, self.conv2 = NISF(), ConvBN(channels, channels, 3)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.conv1(self.neuron1(x)) + x)
        return self.norm(self.conv2(self.neuron2(y)) + x)


class SDQK(nn.Module):
    """Spike-Decomposed Q-K attention (SDQK-A) of MedQKFormer, on 4D ``[B, C, H, W]`` tensors.

    Q, K = NISF(BN(grouped 3x3 conv C -> C/2)) (one grouped conv gives both, interleaved);
    per head, token weights ``W_A = NISF(Σ_c Q_A)``, ``W_I = NISF(Σ_c Q_I)``;
    ``same = W_A K_A + W_I K_I``, ``cross = W_A K_I + W_I K_A``; concat -> residual NISF conv
    block + input -> BN -> another block with residual. Cost O(N C).

    Set :attr:`record` to a dict to capture Q/K spikes and the four terms
    ``AA = W_A K_A, AI = W_A K_I, IA = W_I K_A, II = W_I K_I`` (``same = AA + II``,
    ``cross = AI + IA``), each ``[B, C/2, H, W]``.
    """

    def __init__(self, channels: int, heads: int = 4) -> None:
        super().__init__()
        half = channels // 2
        if channels % 2 or half % heads:
            raise ValueError(f"channels ({channels}) must be divisible by {2 * heads}")
        self.half, self.heads = half, heads
        self.recorded_channels = half  # of each recorded spike tensor (Q, K)
        self.qk = ConvBN(channels, channels, 3, groups=half)
        self.q_neuron, self.k_neuron = NISF(), NISF()
        self.weight_active, self.weight_inactive = NISF(), NISF()
        self.mix = MaskSpikeConv(channels)
        self.norm = nn.BatchNorm2d(channels)
        self.refine = MaskSpikeConv(channels)
        self.record: dict[str, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k = self.qk(x).unflatten(1, (self.half, 2)).unbind(2)
        q_a, k_a = self.q_neuron(q), self.k_neuron(k)
        q_i, k_i = 1.0 - q_a, 1.0 - k_a
        heads = (b, self.heads, self.half // self.heads, h * w)
        w_a = self.weight_active(q_a.reshape(heads).sum(2, keepdim=True))
        w_i = self.weight_inactive(q_i.reshape(heads).sum(2, keepdim=True))
        k_a4, k_i4 = k_a.reshape(heads), k_i.reshape(heads)
        terms = {"AA": w_a * k_a4, "AI": w_a * k_i4, "IA": w_i * k_a4, "II": w_i * k_i4}
        same = (terms["AA"] + terms["II"]).reshape(b, self.half, h, w)
        cross = (terms["AI"] + terms["IA"]).reshape(b, self.half, h, w)
        out = self.norm(self.mix(torch.cat((same, cross), dim=1)) + x)
        out = self.refine(out) + out
        if self.record is not None:
            self.record.update(q=q_a.detach(), k=k_a.detach())
            for name, term in terms.items():
                self.record[name] = term.detach().reshape(b, self.half, h, w)
        return out
