"""The correction store: images, corrected masks and their provenance, written atomically.

Layout (the same as a training folder, so the trainer reads it directly)::

    <store>/images/<stem>.png        RGB uint8
    <store>/masks/<stem>.png         uint8 0/255
    <store>/provenance/<stem>.json   source file, layer, model, time, shape

An entry is complete when all three files exist; the provenance is written last, so a save that
was interrupted leaves no complete entry. A store holds one correction per image: saving an
image again (the same pixels, whatever its name) replaces its earlier correction, and removing
an entry moves its three files to ``<store>/removed/`` (laid out like a store) rather than
deleting them. Entries of the same pixels from older stores are kept together when a training
run splits the store (:func:`entry_groups`), so one image is never both trained on and held out.
:meth:`CorrectionStore.list` lists exactly the complete entries and training on the store
(``find_pairs``, which recognises a store by its ``provenance/`` folder) uses exactly those:
:func:`complete_stems` is the one rule for both.
Temporary files that an interrupted save left behind are removed when they are an hour old
(:meth:`CorrectionStore.remove_stale_temp_files`, run whenever a store is opened).

Long correction names are cut to a bounded ASCII prefix plus a hash of the full name, so that
every file name stays well below the 255-byte limit of common file systems.

Drafts (autosaved painted masks, :func:`write_draft`) live in a flat folder::

    <drafts>/<ascii prefix>-<hash>.png    uint8 0/255
    <drafts>/<ascii prefix>-<hash>.json   {"layer": "<the full layer name>"}
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..common import STALE_TEMP_AGE_S, atomic_write, remove_stale_temp_files
from .io import image_hw, read_image, read_mask, to_binary_mask, to_rgb_uint8

log = logging.getLogger(__name__)

#: Longest sanitised ASCII prefix of a draft file name (the hash follows it).
DRAFT_PREFIX_CHARS = 60
#: Longest name part of a correction stem (the time stamp follows it); longer names are cut to
#: a prefix plus a hash of the full name.
CORRECTION_NAME_CHARS = 100
HASH_CHARS = 10
#: The time stamp that ends a stored correction's stem (``_YYYYmmdd-HHMMSS_micro``).
STAMP = re.compile(r"_\d{8}-\d{6}_\d{6}$")


def _safe_ascii(name: str) -> str:
    """Runs of characters other than ASCII letters, digits, ``_`` and ``-`` become one ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")


def _name_hash(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]


def draft_file_name(layer_name: str, image: str = "") -> str:
    """The draft file name of a layer: ``<ASCII prefix>-<hash>.png``, unique and bounded.

    The prefix is the name with everything but ASCII letters, digits, ``_`` and ``-`` replaced
    by ``_`` (at most :data:`DRAFT_PREFIX_CHARS` characters, ``"mask"`` if nothing is left); the
    hash is the first 10 hex digits of the SHA-256 of the full name (UTF-8), so names that
    sanitise alike ("a/b mask", "a_b mask"; "病変 mask", "腫瘍 mask") get different files and
    the name is at most 75 characters long whatever the layer name. ``image``, the file the mask
    was painted on, goes into the hash too: masks of two pictures that share a name ("scan mask"
    of two scans) get files of their own.
    """
    prefix = _safe_ascii(layer_name)[:DRAFT_PREFIX_CHARS].rstrip("_") or "mask"
    key = layer_name if not image else f"{layer_name}\n{image}"
    return f"{prefix}-{_name_hash(key)}.png"


def write_draft(folder: str | Path, layer_name: str, mask: np.ndarray, image: str = "") -> Path:
    """Autosave a painted 2D mask of layer ``layer_name`` in ``folder``; return the PNG path.

    The mask is binarised by :func:`~napari_medspike.data.io.to_binary_mask` (value > 0 is
    foreground) and written as 0/255 to ``folder/draft_file_name(layer_name, image)``
    atomically, then a sidecar ``<same stem>.json`` (``{"layer": layer_name, "image": image}``)
    records the full layer name and the picture's file for :func:`read_draft_names`. Saving the
    same layer of the same picture again replaces its draft.
    """
    folder = Path(folder)
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"draft of layer {layer_name!r}: expected a 2D mask, got shape {array.shape}")
    binary = to_binary_mask(array, name=f"layer {layer_name!r}")
    encoded = png_bytes(binary.astype(np.uint8) * 255)
    path = folder / draft_file_name(layer_name, image)
    sidecar = json.dumps({"layer": layer_name, **({"image": image} if image else {})}, ensure_ascii=False)
    atomic_write(path, lambda tmp: tmp.write_bytes(encoded))
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(sidecar, encoding="utf-8"))
    return path


def read_draft_names(folder: str | Path) -> dict[str, Path]:
    """Drafts in ``folder`` by full layer name -> PNG path (see :func:`write_draft`); where
    masks of several pictures share a layer name, each is listed as ``"<layer> (<picture file
    name>)"``.

    Drafts whose sidecar is unreadable or whose PNG is missing are skipped. PNGs without a
    sidecar (written before sidecars existed) are listed under their file stem, unless a layer
    of that name already has a draft. A missing folder has no drafts.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    drafts: list[tuple[str, str, Path]] = []  # layer name, picture, PNG
    described: set[Path] = set()
    for sidecar in sorted(folder.glob("*.json")):
        png = sidecar.with_suffix(".png")
        try:
            payload = json.loads(sidecar.read_text(encoding="utf-8"))
            name = payload["layer"] if isinstance(payload, dict) else None
        except (OSError, ValueError, KeyError) as err:
            log.warning("%s: unreadable draft sidecar (%s)", sidecar, err)
            continue
        if not isinstance(name, str):
            log.warning("%s: draft sidecar without a layer name", sidecar)
            continue
        described.add(png)
        if png.is_file():
            image = payload.get("image") if isinstance(payload.get("image"), str) else ""
            drafts.append((name, image, png))
    shared = {name for name, _, _ in drafts if sum(other == name for other, _, _ in drafts) > 1}
    found: dict[str, Path] = {}
    for name, image, png in drafts:
        found[f"{name} ({Path(image).name or 'no file'})" if name in shared else name] = png
    for png in sorted(folder.glob("*.png")):
        if png not in described and png.stem not in found:
            found[png.stem] = png
    return found


def default_store() -> Path:
    """``<user data dir>/napari-medspike/corrections`` (platformdirs)."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("napari-medspike", appauthor=False)) / "corrections"


def _stores_file() -> Path:
    return default_store().parent / "stores.json"


def _remembered_stores() -> list[Path]:
    try:
        payload = json.loads(_stores_file().read_text(encoding="utf-8"))
        return [Path(p) for p in payload.get("stores", []) if isinstance(p, str)]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, AttributeError) as err:
        log.warning("%s: unreadable list of corrections folders (%s)", _stores_file(), err)
        return []


def remember_store(root: str | Path) -> None:
    """Note a corrections folder that fine-tuned models are written to, so that later sessions
    offer its models too (:func:`known_stores`); a note that cannot be written is only logged."""
    root = Path(root).expanduser().resolve()
    listed = _remembered_stores()
    if root in listed or root == default_store().resolve():
        return
    payload = json.dumps({"stores": [str(p) for p in (*listed, root)]}, indent=1)
    try:
        atomic_write(_stores_file(), lambda tmp: tmp.write_text(payload, encoding="utf-8"))
    except OSError as err:  # WriteError included
        log.warning("cannot note corrections folder %s in %s: %s", root, _stores_file(), err)


def known_stores() -> list[Path]:
    """Corrections folders that exist: the default one, then the others fine-tuned in before
    (:func:`remember_store`), oldest first."""
    return [p for p in dict.fromkeys([default_store(), *_remembered_stores()]) if p.is_dir()]


def png_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 grey or RGB array as PNG (imageio, a scikit-image dependency), with zlib's
    fastest setting: a 12-megapixel endoscopy photo took 0.8 s instead of 3.2 s at the default
    setting, for a file about a quarter larger."""
    import imageio.v3 as iio

    return iio.imwrite("<bytes>", array, extension=".png", compress_level=1)


def check_correction(image: np.ndarray, mask: np.ndarray) -> None:
    """Raise ``ValueError`` when a binary ``mask`` cannot be stored as the correction of
    ``image`` (any 2D grey/RGB array): it is empty (nothing to learn from) or another size.
    Cheap, so that a dock can check before it writes in the background."""
    if np.shape(mask) != image_hw(image):
        raise ValueError(f"mask {np.shape(mask)} and image {image_hw(image)} differ in size")
    if not np.any(mask):
        raise ValueError("the mask is empty: paint the foreground before saving a correction")


#: The sub-folders of a correction store.
STORE_FOLDERS = ("images", "masks", "provenance")
#: Where removed and replaced entries go, inside the store (itself laid out like a store).
REMOVED_FOLDER = "removed"
#: The provenance key of an entry's pixel fingerprint (:func:`pixel_fingerprint`).
FINGERPRINT_KEY = "image_sha256"


def pixel_fingerprint(rgb_uint8: np.ndarray) -> str:
    """SHA-256 of an 8-bit RGB image's shape and pixels: equal for the same picture however it
    was named or encoded."""
    array = np.ascontiguousarray(rgb_uint8, dtype=np.uint8)
    digest = hashlib.sha256(repr(array.shape).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def _stored_fingerprint(root: Path, stem: str) -> str:
    """The fingerprint an entry recorded, or (entries saved before fingerprints were recorded, or
    whose record was damaged) that of its stored image; an unreadable image is its own group (its
    stem). (A damaged record made its entry a group of its own: saving the picture again kept both,
    and a split could put one picture on both sides.)"""
    try:
        meta = json.loads((root / "provenance" / f"{stem}.json").read_text(encoding="utf-8"))
        if isinstance(meta, dict) and isinstance(meta.get(FINGERPRINT_KEY), str):
            return meta[FINGERPRINT_KEY]
    except (OSError, ValueError):
        pass  # the stored image says which picture it is
    try:
        return pixel_fingerprint((read_image(root / "images" / f"{stem}.png") * 255).round().astype(np.uint8))
    except (OSError, ValueError) as err:
        log.warning("%s: cannot fingerprint correction %s (%s)", root, stem, err)
        return f"stem:{stem}"


def entry_groups(root: str | Path) -> dict[str, str]:
    """Stem -> pixel fingerprint for the complete entries of the store at ``root``: entries with
    the same fingerprint show the same image, and a split keeps them together."""
    root = Path(root)
    return {stem: _stored_fingerprint(root, stem) for stem in complete_stems(root)}


def is_correction_store(folder: str | Path) -> bool:
    """Whether ``folder`` is laid out as a correction store (it has a ``provenance/`` folder)."""
    return (Path(folder) / "provenance").is_dir()


def complete_stems(root: str | Path) -> list[str]:
    """Stems of the complete entries of the store at ``root``, sorted: those with
    ``images/<stem>.png``, ``masks/<stem>.png`` and ``provenance/<stem>.json``. The store lists
    these and training on the store uses these, and nothing else."""
    root = Path(root)
    if not (root / "provenance").is_dir():
        return []
    stems = []
    for meta_file in sorted((root / "provenance").glob("*.json")):
        if meta_file.name.startswith("."):
            continue
        stem = meta_file.stem
        if (root / "images" / f"{stem}.png").is_file() and (root / "masks" / f"{stem}.png").is_file():
            stems.append(stem)
    return stems


@dataclass
class Correction:
    """One stored correction."""

    stem: str
    image: Path
    mask: Path
    provenance: dict[str, Any]
    #: Stems of the earlier corrections of the same image that this save replaced.
    replaced: tuple[str, ...] = ()


class CorrectionStore:
    """Save, list and load corrections in a folder (created on first save)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_store()
        self.remove_stale_temp_files()

    def remove_stale_temp_files(self, max_age_s: float = STALE_TEMP_AGE_S) -> list[Path]:
        """Delete temporary files (``.<name>.*.tmp``) that saves interrupted by a crash left in
        the store's folders, once they are ``max_age_s`` seconds old (a save in progress keeps
        its temporary file for well under a second, so it is never touched); return them."""
        removed = []
        for sub in STORE_FOLDERS:
            removed += remove_stale_temp_files(self.root / sub, max_age_s)
        for p in removed:
            log.info("removed %s, left by an interrupted save", p)
        return removed

    def save(self, image: np.ndarray, mask: np.ndarray, provenance: dict[str, Any] | None = None,
             name: str = "correction", picture: np.ndarray | None = None) -> Correction:
        """Store an image (any 2D grey/RGB/RGBA array) and its mask; return the stored entry.

        ``picture``: the pixels ``image`` was rendered from, where it is a rendering (a 16-bit
        scan through its contrast limits): the picture is known again by them, whatever the
        contrast it was saved with.

        An earlier correction of the same image (the same pixels) is replaced: it moves to
        ``removed/`` once the new entry is complete, and the entry lists it in ``replaced``;
        except that a mask the provenance says was not painted (``"painted": False``, the model's
        mask as it came) never replaces one that was (``ValueError``).
        ``mask`` follows :func:`~napari_medspike.data.io.to_binary_mask` (value > 0 is
        foreground; an all-foreground mask is valid). Raises ``ValueError`` for an empty mask
        (nothing to learn from) or a mask that does not match the image size. ``name`` starts
        the stored stem (sanitised to ASCII; names over :data:`CORRECTION_NAME_CHARS` characters
        are cut and end in a hash of the full name).
        """
        pixels = to_rgb_uint8(image, name="image")
        binary = to_binary_mask(mask, name="mask")
        check_correction(pixels, binary)
        # a stored correction opened again keeps its name, not a second time stamp
        safe = STAMP.sub("", _safe_ascii(name)) or "correction"
        if len(safe) > CORRECTION_NAME_CHARS:
            safe = f"{safe[: CORRECTION_NAME_CHARS - HASH_CHARS - 1].rstrip('_')}-{_name_hash(name)}"
        now_ns = time.time_ns()  # one clock reading: seconds, then microseconds, so stems sort by time
        stem = f"{safe}_{time.strftime('%Y%m%d-%H%M%S', time.localtime(now_ns // 10**9))}_{now_ns // 1000 % 1_000_000:06d}"
        paths = {k: self.root / k for k in ("images", "masks", "provenance")}
        for p in paths.values():
            p.mkdir(parents=True, exist_ok=True)
        fingerprint = pixel_fingerprint(pixels if picture is None else to_rgb_uint8(picture, name="picture"))
        earlier = [s for s, f in entry_groups(self.root).items() if f == fingerprint]
        if (provenance or {}).get("painted") is False:
            painted = [s for s in earlier if self._provenance(s).get("painted") is True]
            if painted:
                raise ValueError(
                    f"the stored correction {painted[0]} of this picture was painted by hand, and this mask was "
                    "not painted since the model made it: saving it would replace the painted one with the "
                    "model's mask. Paint on this mask first, or remove the stored correction if the model's "
                    "mask is right")
        meta = {
            "stem": stem,
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "shape": list(binary.shape),
            "foreground_fraction": float(binary.mean()),
            **(provenance or {}),
            FINGERPRINT_KEY: fingerprint,
        }
        if earlier:
            meta["replaces"] = earlier
        image_png = png_bytes(pixels)
        mask_png = png_bytes(binary.astype(np.uint8) * 255)
        # Provenance last: an entry is listed only once its image and mask are complete.
        atomic_write(paths["images"] / f"{stem}.png", lambda t: t.write_bytes(image_png))
        atomic_write(paths["masks"] / f"{stem}.png", lambda t: t.write_bytes(mask_png))
        atomic_write(paths["provenance"] / f"{stem}.json", lambda t: t.write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8"))
        for old in earlier:
            self.remove(old)
        return Correction(stem, paths["images"] / f"{stem}.png", paths["masks"] / f"{stem}.png", meta, tuple(earlier))

    def _provenance(self, stem: str) -> dict[str, Any]:
        """An entry's provenance record (empty when it cannot be read)."""
        try:
            meta = json.loads((self.root / "provenance" / f"{stem}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return meta if isinstance(meta, dict) else {}

    def remove(self, stem: str) -> Path:
        """Take an entry out of the store: its provenance, image and mask move (in that order,
        so it stops being listed at once) to ``removed/`` inside the store, from where they can
        be moved back by hand. Returns that folder; ``KeyError`` if there is no such entry."""
        if stem not in complete_stems(self.root):
            raise KeyError(f"no correction {stem!r} in {self.root}")
        removed = self.root / REMOVED_FOLDER
        for sub, suffix in (("provenance", ".json"), ("images", ".png"), ("masks", ".png")):
            (removed / sub).mkdir(parents=True, exist_ok=True)
            (self.root / sub / f"{stem}{suffix}").replace(removed / sub / f"{stem}{suffix}")
        return removed

    def list(self) -> list[Correction]:
        """Complete entries (:func:`complete_stems`: exactly what training on the store uses),
        sorted by stem (oldest first for one name). A provenance file that cannot be read is
        reported in the entry's provenance (``{"error": ...}``) rather than hiding the entry."""
        entries = []
        for stem in complete_stems(self.root):
            meta_file = self.root / "provenance" / f"{stem}.json"
            try:
                meta = json.loads(meta_file.read_text(encoding="utf-8"))
                if not isinstance(meta, dict):
                    raise ValueError(f"expected a JSON object, got {type(meta).__name__}")
            except (OSError, ValueError) as err:
                log.warning("%s: unreadable provenance (%s)", meta_file, err)
                meta = {"stem": stem, "error": f"unreadable provenance: {err}"}
            image, mask = self.root / "images" / f"{stem}.png", self.root / "masks" / f"{stem}.png"
            entries.append(Correction(stem, image, mask, meta))
        return entries

    def entry(self, stem: str) -> Correction:
        """The stored entry ``stem`` (``KeyError`` when there is none); its files are not read."""
        entry = next((c for c in self.list() if c.stem == stem), None)
        if entry is None:
            raise KeyError(f"no correction {stem!r} in {self.root}")
        return entry

    def load(self, stem: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Image (float RGB), mask (bool) and provenance of one entry."""
        entry = self.entry(stem)
        return read_image(entry.image), read_mask(entry.mask), entry.provenance
