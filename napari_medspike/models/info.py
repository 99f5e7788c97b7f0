"""What a model is and where it comes from, as one typed object (in the spirit of timm's
``PretrainedCfg``): every :class:`~.base.Segmenter` carries one (:attr:`~.base.Segmenter.info`),
checkpoints store it as their metadata, and derived checkpoints are ``dataclasses.replace``-d
copies of it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

#: How images are fed to every model of this package.
NORMALISATION = "RGB scaled to [0, 1]; grey replicated to 3 channels"
#: Version of the metadata layout in checkpoints.
FORMAT = 1


@dataclass(frozen=True)
class ModelInfo:
    """A model's description: architecture and config, input size and normalisation, the
    inference settings it recommends, and how it was trained and measured.

    ``training`` and ``metrics`` are free-form records (data, split, epochs; validation figures,
    energy); ``extra`` keeps any other metadata a checkpoint carries; ``path`` is the file it was
    loaded from (not stored in the file)."""

    arch: str
    config: dict[str, Any]
    input_size: int
    normalisation: str = NORMALISATION
    inference: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    package_version: str | None = None
    path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # short: the records hold validation keys and style vectors
        return (f"ModelInfo(arch={self.arch!r}, config={self.config!r}, input_size={self.input_size}, "
                f"inference={self.inference!r}, training=<{len(self.training)} entries>, "
                f"metrics=<{', '.join(self.metrics) or 'none'}>, path={self.path!r})")

    @property
    def recommended_flips(self) -> bool:
        """Whether the model recommends mirror test-time augmentation."""
        return bool(self.inference.get("flips", False))

    @property
    def recommended_mode(self) -> str:
        """How the model sees an image: ``"tiled"`` (tiles at full resolution) for a model trained
        on random crops, ``"resize"`` (the whole image at its input size) otherwise."""
        return "tiled" if self.training.get("mode") == "crop" else "resize"

    @property
    def validated_on_held_out(self) -> bool:
        """Whether its validation figures come from held-out images; False for a fine-tune on
        too few corrections to hold one out, measured on the images it was trained on, and for a
        run that held out nothing."""
        held_out = self.training.get("held_out")
        if isinstance(held_out, bool):
            return held_out
        # checkpoints written before the flag say it in words only
        return not str(self.training.get("validated_on", "")).startswith("training")

    def to_metadata(self) -> dict[str, Any]:
        """The JSON object a checkpoint stores (``path`` excluded)."""
        meta = {"format": FORMAT, "arch": self.arch, "config": dict(self.config), "input_size": self.input_size,
                "normalisation": self.normalisation, "package_version": self.package_version}
        for key in ("inference", "training", "metrics"):
            if getattr(self, key):
                meta[key] = getattr(self, key)
        return {**self.extra, **meta}

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], path: str | None = None) -> ModelInfo:
        """Read a checkpoint's (validated) metadata; keys this class does not name go to ``extra``."""
        named = {f.name for f in dataclasses.fields(cls)} - {"extra", "path"}
        values = {k: v for k, v in meta.items() if k in named and v is not None}
        extra = {k: v for k, v in meta.items() if k not in named and k != "format"}
        values.setdefault("normalisation", NORMALISATION)
        return cls(path=path, extra=extra, **values)

    def record(self) -> dict[str, Any]:
        """What a copy of the same weights carries into its checkpoint besides the architecture
        (``save_checkpoint(model, path, **info.record())``): input size, inference settings,
        training record, metrics and any other keys."""
        described = {"format", "arch", "config", "normalisation", "package_version", "storage_dtype"}  # this file's
        return {k: v for k, v in self.to_metadata().items() if k not in described}

    def inherited(self) -> dict[str, Any]:
        """What a model trained from this one keeps (its recommended inference settings); the
        rest describes these weights only."""
        return {"inference": dict(self.inference)} if self.inference else {}

    def updated(self, **changes: Any) -> ModelInfo:
        """A copy with ``changes``; keys that are not fields go to ``extra``."""
        named = {f.name for f in dataclasses.fields(self)}
        extra = {**self.extra, **{k: v for k, v in changes.items() if k not in named}}
        return dataclasses.replace(self, extra=extra, **{k: v for k, v in changes.items() if k in named})
