"""napari-medspike: spiking-transformer segmentation of 2D medical images in napari."""

from .models import ARCHITECTURES, InputError, alignment_loss, create_model, segmentation_loss

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES",
    "InputError",
    "__version__",
    "alignment_loss",
    "create_model",
    "segmentation_loss",
]
