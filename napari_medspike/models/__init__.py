"""Spiking segmenters: MedSpikeFormer, its ANN and rate twins, and MedQKFormer."""

from .attention import INTERACTIONS
from .base import InputError, Segmenter
from .losses import alignment_loss, segmentation_loss
from .medqkformer import MedQKFormer
from .medspikeformer import ANNTwin, MedSpikeFormer, RateTwin
from .routed import RoutedSegmenter
from .registry import ARCHITECTURES, TRAINABLE_ARCHITECTURES, create_model

__all__ = [
    "ARCHITECTURES",
    "ANNTwin",
    "INTERACTIONS",
    "InputError",
    "MedQKFormer",
    "MedSpikeFormer",
    "RateTwin",
    "RoutedSegmenter",
    "Segmenter",
    "TRAINABLE_ARCHITECTURES",
    "alignment_loss",
    "create_model",
    "segmentation_loss",
]
