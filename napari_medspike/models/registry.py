"""Model registry: build any architecture by name with :func:`create_model`."""

from __future__ import annotations

from typing import Any

from .base import Segmenter
from .medqkformer import MedQKFormer
from .medspikeformer import ANNTwin, MedSpikeFormer, RateTwin
from .routed import RoutedSegmenter

ARCHITECTURES: dict[str, type[Segmenter]] = {
    "medspikeformer": MedSpikeFormer,
    "medqkformer": MedQKFormer,
    "ann_twin": ANNTwin,
    "rate_twin": RateTwin,
    "routed": RoutedSegmenter,
}


#: The architectures one trains from scratch (a routed model is made by fine-tuning).
TRAINABLE_ARCHITECTURES: dict[str, type[Segmenter]] = {k: v for k, v in ARCHITECTURES.items() if k != "routed"}


def model_class(arch: str) -> type[Segmenter]:
    """The class behind an architecture name (``"medspikeformer"``, ``"ann_twin"``, ...)."""
    key = arch.lower().replace("-", "_")
    if key not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[key]


def create_model(arch: str, **config: Any) -> Segmenter:
    """Build an untrained segmenter.

    Args:
        arch: ``"medspikeformer"`` (LIF, T timesteps, SDSA), ``"medqkformer"`` (NISF, SDQK-A)
            ``"ann_twin"`` (MedSpikeFormer's ANN twin) or ``"rate_twin"`` (its twin with LIF
            firing rates as activations, whose weights carry over to the SNN).
        **config: architecture options: ``in_channels`` (3), ``widths`` ((32, 64, 128, 256)),
            ``heads`` (4); for MedSpikeFormer ``timesteps`` (T, default 4), ``threshold`` (the
            LIF's, 1.0) and ``spike_levels`` (spikes per timestep, 1: binary); for it and its
            twin ``layout`` (``"spike_driven"``, the default, or ``"reference"``); for the rate
            twin ``timesteps``, ``threshold`` and ``activation`` (``"rate"`` or ``"ramp"``); for
            MedQKFormer ``side_heads`` (False). Unknown options raise :class:`ModelConfigError`
            (a ``ValueError``) that lists the accepted ones.
            ``"routed"`` (a model and its fine-tuned copy behind a gate, made by fine-tuning)
            takes ``expert_arch`` and ``expert_config``.

    Example:
        >>> model = create_model("medspikeformer", timesteps=2, widths=(16, 32, 64, 128))
    """
    cls = model_class(arch)
    for key in ("in_channels", "heads", "timesteps", "spike_levels"):
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ModelConfigError(f"bad config for {cls.arch}: {key} must be a whole number of at least 1, "
                                   f"got {value!r}")
    widths = config.get("widths")
    if widths is not None and not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
        raise ModelConfigError(f"bad config for {cls.arch}: widths must be whole numbers of at least 1, got {widths!r}")
    try:
        return cls(**config)
    except ValueError as err:  # e.g. widths a number of heads cannot divide: say which options
        given = ", ".join(f"{k}={v!r}" for k, v in config.items())
        raise ModelConfigError(f"bad config for {cls.arch} ({given or 'defaults'}): {err}") from None
    except TypeError as err:
        import inspect

        accepted = [name for name, p in inspect.signature(cls.__init__).parameters.items()
                    if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        raise ModelConfigError(f"bad config for {cls.arch}: {err} (its options: {', '.join(accepted)})") from None


class ModelConfigError(ValueError, TypeError):
    """Options an architecture does not take: a ``ValueError`` (a bad input the command-line tools
    report in one line) and, as it always was, a ``TypeError``."""
