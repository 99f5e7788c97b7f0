"""napari-medspike: spiking-transformer segmentation of 2D medical images in napari."""

__version__ = "0.1.0"

from .engine.checkpoint import list_models, load_model, save_checkpoint  # noqa: E402
from .inference.segment import segment  # noqa: E402
from .models import ARCHITECTURES, InputError, alignment_loss, create_model, segmentation_loss  # noqa: E402

__all__ = [
    "ARCHITECTURES",
    "InputError",
    "__version__",
    "alignment_loss",
    "create_model",
    "list_models",
    "load_model",
    "save_checkpoint",
    "segment",
    "segmentation_loss",
]
