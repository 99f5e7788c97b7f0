"""Sample data for napari's File > Open Sample menu: four real images and a synthetic one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .data.io import read_mask
from .data.synthetic import synthetic_lesion

SAMPLES = Path(__file__).resolve().parent / "samples"
#: The samples' keys in napari.yaml (``viewer.open_sample("napari-medspike", key)``), first the default.
SAMPLE_KEYS = ("kvasir", "ph2", "busi", "glas", "synthetic")
LayerData = tuple[Any, dict[str, Any], str]


#: metadata key of a sample's expert mask: the correction dock never picks it by itself
GROUND_TRUTH = "ground_truth"
#: metadata key of a sample image's shipped model (trained on its kind of image): Segment picks it
SUGGESTED_MODEL = "suggested_model"


def _real(name: str, title: str, model: str) -> list[LayerData]:
    import imageio.v3 as iio

    path = SAMPLES / f"{name}.jpg"
    image = iio.imread(path)
    mask = read_mask(SAMPLES / f"{name}_mask.png").astype("uint8")
    meta = {"path": str(path), "licence": "see samples/SOURCES.md", SUGGESTED_MODEL: model}
    return [
        (image, {"name": title, "rgb": True, "metadata": meta}, "image"),
        (mask, {"name": f"{title} ground truth", "opacity": 0.4, "visible": False,
                "metadata": {GROUND_TRUTH: True, "source_image": title}}, "labels"),
    ]


def kvasir_sample() -> list[LayerData]:
    """A colonoscopy polyp image from Kvasir-SEG and its expert mask."""
    return _real("kvasir", "polyp (Kvasir-SEG)", "default")


def ph2_sample() -> list[LayerData]:
    """A dermoscopy image from PH2 and its expert mask."""
    return _real("ph2", "skin lesion (PH2)", "dermoscopy")


def busi_sample() -> list[LayerData]:
    """A breast ultrasound image from BUSI and its expert mask."""
    return _real("busi", "breast ultrasound (BUSI)", "breast-ultrasound")


def glas_sample() -> list[LayerData]:
    """A colon gland histology image (H&E) from GlaS and its expert mask."""
    return _real("glas", "glands (GlaS)", "histology-glands")


def synthetic_sample() -> list[LayerData]:
    """A synthetic lesion image and its ground-truth mask."""
    image, mask = synthetic_lesion((256, 256), seed=0)
    # the general model: opened after another sample, its model stayed (dermoscopy: Dice 0.09)
    return [
        (image, {"name": "synthetic lesion", "rgb": True, "metadata": {SUGGESTED_MODEL: "default"}}, "image"),
        (mask, {"name": "synthetic lesion ground truth", "opacity": 0.4, "visible": False,
                "metadata": {GROUND_TRUTH: True, "source_image": "synthetic lesion"}}, "labels"),
    ]
