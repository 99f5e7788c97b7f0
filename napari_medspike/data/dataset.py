"""Folders of images and masks: pairing, seeded splits, and a decoded-once training cache."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .io import (IMAGE_SUFFIXES, ImageReadError, image_hw, missing_file_reason, read_image, read_mask, read_pixels,
                 resize_extent, rgb_for_resize, to_rgb_float)
from .resize import resize_image, resize_mask

log = logging.getLogger(__name__)

TRAINING_MODES = ("resize", "crop")


@dataclass(frozen=True)
class Pair:
    """An image file, its mask file, and a key unique across folders (``folder/stem``).

    ``group`` names the picture when several pairs can show the same one (entries of a
    correction store with the same pixels): a split keeps a group on one side. Empty: the pair
    is its own group."""

    image: Path
    mask: Path
    key: str
    group: str = ""

    @property
    def split_unit(self) -> str:
        """What a split assigns to train or validation: the group, or the key."""
        return f"group:{self.group}" if self.group else self.key


def _files_by_stem(folder: Path, problems: list[str] | None = None) -> dict[str, Path]:
    """Image files by stem; a second file of a stem (``a.png`` beside ``a.jpg``) is not used and
    is listed in ``problems``: which of the two a mask belongs to cannot be told."""
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES or p.name.startswith("."):
            continue
        if p.is_symlink() and not p.exists() and problems is not None:  # a moved dataset, an unmounted drive
            problems.append(f"{p}: {missing_file_reason(p)}; not used")
        elif p.is_file():
            if p.stem in files and problems is not None:
                problems.append(f"{p}: {files[p.stem].name} has the same name; only that one is used")
            files.setdefault(p.stem, p)
    return files


#: How public datasets name an image's mask besides its own name: ``ISIC_0000000_segmentation``
#: (ISIC), ``malignant (1)_mask`` (BUSI as published), ``testA_1_anno`` (GlaS), ``…_gt``.
MASK_SUFFIXES = ("_mask", "_segmentation", "_seg", "_anno", "_gt", "_label", "_labels")


def mask_stems_for(stem: str, masks: dict[str, Path]) -> list[str]:
    """The stems among ``masks`` that may name the mask of image ``stem``: the same name, else
    the name with one of :data:`MASK_SUFFIXES` (any case; more than one: it cannot be told which)."""
    if stem in masks:
        return [stem]
    names = {(stem + suffix).lower() for suffix in MASK_SUFFIXES}
    return sorted(m for m in masks if m.lower() in names)


def dataset_name(folder: str | Path) -> str:
    """A data folder as a dataset name, the first part of its image keys
    (``../shared/data/kvasir-seg`` -> ``kvasir-seg``; ``.`` -> the folder's own name)."""
    return Path(os.path.abspath(str(folder))).name or str(folder)


def find_pairs(folders: str | Path | Sequence[str | Path]) -> tuple[list[Pair], list[str]]:
    """Pair ``images/<stem>.*`` with ``masks/<stem>.*`` in each folder (or with
    ``masks/<stem>_mask.*``, ``_segmentation``, … as public datasets name them: :func:`mask_stems_for`).

    Returns the pairs and a list of problems (missing masks, missing folders) naming the files;
    what can be paired stays usable. Raises ``FileNotFoundError`` if no folder exists at all.

    A correction store (a folder with ``provenance/``, see :mod:`~napari_medspike.data.corrections`)
    gives exactly the entries its ``CorrectionStore.list()`` shows; images and masks of an
    incomplete entry (an interrupted save) are listed as problems and not used.
    """
    from .corrections import complete_stems, entry_groups, is_correction_store

    if isinstance(folders, (str, Path)):
        folders = [folders]
    pairs: list[Pair] = []
    problems: list[str] = []
    for folder in map(Path, folders):
        images_dir, masks_dir = folder / "images", folder / "masks"
        if not images_dir.is_dir() or not masks_dir.is_dir():
            missing = "no such folder; " if not folder.exists() else "not a folder; " if not folder.is_dir() else ""
            problems.append(f"{folder}: {missing}expected sub-folders images/ and masks/")
            continue
        name = dataset_name(folder)  # keys start with the dataset's name
        if is_correction_store(folder):
            groups = entry_groups(folder)  # stem -> pixel fingerprint, for the complete entries
            for stem, group in groups.items():
                # one picture, one side, also across stores (an unreadable entry stays its store's own)
                own = f"{folder}:{group}" if group.startswith("stem:") else f"picture:{group}"
                pairs.append(Pair(images_dir / f"{stem}.png", masks_dir / f"{stem}.png", f"{name}/{stem}", group=own))
            used = {p.image for p in pairs} | {p.mask for p in pairs}
            for sub in (images_dir, masks_dir):
                for path in sorted(sub.iterdir()):
                    if (path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
                            and path.is_file() and path not in used):
                        problems.append(f"{path}: not a complete correction (no provenance/{path.stem}.json, or "
                                        "its image or mask is missing: an interrupted save?); not used")
            continue
        images, masks = _files_by_stem(images_dir, problems), _files_by_stem(masks_dir, problems)
        used: set[str] = set()
        for stem, image in images.items():
            found = mask_stems_for(stem, masks)
            if len(found) == 1:
                pairs.append(Pair(image, masks[found[0]], f"{name}/{stem}"))
                used.add(found[0])
            elif found:
                problems.append(f"{image}: not used, {' and '.join(masks[m].name for m in found)} in {masks_dir} "
                                "could each be its mask (rename the one that is not)")
            else:
                problems.append(f"{image}: no mask named {stem}.* (or {stem}_mask.*, {stem}_segmentation.*, …) "
                                f"in {masks_dir}")
        for stem in sorted(set(masks) - used):
            problems.append(f"{masks[stem]}: mask without an image")
    if not pairs and all("expected sub-folders" in p for p in problems) and problems:
        raise FileNotFoundError("; ".join(problems))
    return _group_copies(pairs), problems


def _group_copies(pairs: list[Pair]) -> list[Pair]:
    """Pairs whose image files hold the same bytes (one picture saved under two names, in one folder
    or two) put in one group, so that a split keeps them on one side; the others as they were.
    Only files of equal size are read."""
    import hashlib
    from collections import defaultdict

    by_size: dict[int, list[Pair]] = defaultdict(list)
    for p in pairs:
        if not p.group:
            try:
                by_size[p.image.stat().st_size].append(p)
            except OSError:
                continue
    lead: dict[str, str] = {}
    for same_size in (group for group in by_size.values() if len(group) > 1):
        by_bytes: dict[str, list[Pair]] = defaultdict(list)
        for p in same_size:
            try:
                by_bytes[hashlib.sha256(p.image.read_bytes()).hexdigest()].append(p)
            except OSError:
                continue
        for copies in (group for group in by_bytes.values() if len(group) > 1):
            first = min(p.key for p in copies)
            log.info("%s hold the same picture: one group, on one side of a split",
                     " and ".join(str(p.image) for p in copies))
            lead.update((p.key, first) for p in copies)
    if not lead:
        return pairs
    return [dataclasses.replace(p, group=f"copies:{lead[p.key]}") if p.key in lead else p for p in pairs]


def split_units(pairs: Sequence[Pair]) -> int:
    """How many units a split can share out (:attr:`Pair.split_unit`: distinct pictures)."""
    return len({p.split_unit for p in pairs})


def split_pairs(pairs: Sequence[Pair], val_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Seeded train/validation split by pair key (one image is never in both); pairs of one
    group (the same picture stored twice) land on the same side, and the fraction counts groups.
    Pairs without a group split exactly as they did before groups existed."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    seen: dict[str, Path] = {}
    for p in pairs:
        if p.key in seen:
            raise ValueError(f"two images share the key {p.key} ({seen[p.key]} and {p.image}): an image is "
                             "listed twice, or two data folders have the same name (rename one)")
        seen[p.key] = p.image
    units = sorted({p.split_unit for p in pairs})
    rng = random.Random(seed)
    rng.shuffle(units)
    n_val = int(round(len(units) * val_fraction))
    if val_fraction > 0 and len(units) >= 2:
        n_val = max(1, min(n_val, len(units) - 1))
    val_units = set(units[:n_val])
    train = [p for p in pairs if p.split_unit not in val_units]
    val = [p for p in pairs if p.split_unit in val_units]
    return train, val


def write_split(path: Path, train: Sequence[Pair], val: Sequence[Pair], seed: int,
                skipped: Sequence[tuple[Pair, str]] = ()) -> None:
    """Record a split as JSON (keys and files) so that it can be checked and reused (atomically).

    ``train`` and ``val`` are the pairs actually used; ``skipped`` lists ``(pair, reason)`` for
    pairs left out (e.g. unreadable files) under ``"skipped"``, apart from both."""
    from ..common import atomic_write

    def row(p: Pair) -> dict[str, str]:
        return {"key": p.key, "image": str(p.image), "mask": str(p.mask)}

    payload = {
        "seed": seed,
        "train": [row(p) for p in train],
        "val": [row(p) for p in val],
        "skipped": [{**row(p), "reason": reason} for p, reason in skipped],
    }
    atomic_write(Path(path), lambda tmp: tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8"))


def load_pair(pair: Pair, as_float: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Decode one pair: float image ``[H, W, 3]`` and bool mask ``[H, W]`` of the same size
    (``as_float=False``: the image's pixels as stored, see :func:`~.io.read_pixels`)."""
    image = read_image(pair.image) if as_float else read_pixels(pair.image)
    mask = read_mask(pair.mask)
    if image_hw(image) != mask.shape:
        raise ImageReadError(f"{pair.mask}: mask size {mask.shape} differs from image {image_hw(image)}")
    return image, mask


class CachedPairs(torch.utils.data.Dataset):
    """Images and masks decoded once and kept in memory as uint8 tensors.

    ``mode="resize"`` stores every pair resized to ``size x size`` (whole-object modalities), the
    image as prediction builds its input (:func:`~.io.rgb_for_resize`: a large one box-averaged
    first, over whole boxes) and the mask over the same extent;
    ``mode="crop"`` stores them at full resolution (at least ``size`` on the short side) and
    serves random ``size x size`` crops (``random_crops=False``: the centre crop).
    ``soft_masks=True`` resizes masks like images (area-weighted) instead of by nearest neighbour,
    so a pixel on an object's edge holds the fraction of it the object covers (a Kvasir-SEG mask
    taken to 128² and back keeps Dice 0.998 with itself that way, 0.990 by nearest neighbour:
    training/mask_resize_ceiling.py). Items then carry masks in [0, 1] instead of 0/1. Unreadable or
    inconsistent pairs are skipped and listed in :attr:`problems` (messages) and :attr:`skipped`
    (``(pair, message)``); :attr:`pairs` holds the pairs actually used.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        size: int = 256,
        mode: str = "resize",
        random_crops: bool = True,
        progress: Callable[[int, int], None] | None = None,
        soft_masks: bool = False,
    ) -> None:
        if mode not in TRAINING_MODES:
            raise ValueError(f"unknown mode {mode!r}; use one of {TRAINING_MODES}")
        self.size, self.mode, self.random_crops = size, mode, random_crops
        self.mask_scale = 255.0 if soft_masks else 1.0  # stored as uint8: fractions in 1/255 steps
        shrink_mask = resize_image if soft_masks else resize_mask
        self.images: list[torch.Tensor] = []
        self.masks: list[torch.Tensor] = []
        self.pairs: list[Pair] = []
        self.problems: list[str] = []
        self.skipped: list[tuple[Pair, str]] = []
        for i, pair in enumerate(pairs):
            try:
                pixels, mask = load_pair(pair, as_float=False)
                # resize mode: the input prediction builds (a large image box-averaged first, over
                # the whole boxes) and the mask over the same extent
                image = rgb_for_resize(pixels, size) if mode == "resize" else to_rgb_float(pixels, str(pair.image))
            except ImageReadError as err:
                self.problems.append(str(err))
                self.skipped.append((pair, str(err)))
                log.warning("skipping %s", err)
                continue
            if mode == "resize":
                height, width = resize_extent(*mask.shape, size)
                mask = mask[:height, :width]
            img = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
            msk = torch.from_numpy(np.ascontiguousarray(mask))[None, None].float()
            if mode == "resize":
                img, msk = resize_image(img, size), shrink_mask(msk, size)
            elif min(img.shape[-2:]) < size:
                scale = size / min(img.shape[-2:])
                new = [max(size, round(s * scale)) for s in img.shape[-2:]]
                img, msk = resize_image(img, new), shrink_mask(msk, new)
            self.images.append((img[0].clamp(0, 1) * 255).round().to(torch.uint8))
            self.masks.append((msk[0] * self.mask_scale).round().to(torch.uint8))
            self.pairs.append(pair)
            if progress is not None:
                progress(i + 1, len(pairs))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.images[index], self.masks[index]
        if self.mode == "crop":
            h, w = image.shape[-2:]
            s = self.size
            if self.random_crops:
                y = int(torch.randint(0, h - s + 1, ()))
                x = int(torch.randint(0, w - s + 1, ()))
            else:
                y, x = (h - s) // 2, (w - s) // 2
            image, mask = image[:, y : y + s, x : x + s], mask[:, y : y + s, x : x + s]
        return image.float() / 255.0, mask.float() / self.mask_scale
