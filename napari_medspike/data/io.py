"""Reading images and masks from disk into the layouts the models expect."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..common import InputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: File names a JPEG goes by.
JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")


class ImageReadError(InputError):
    """A file or array that cannot be used as a 2D image or mask; the message names it. An
    :class:`~napari_medspike.common.InputError` (and so a ``ValueError``)."""


#: The first bytes of the image formats the decoders read (and of a few they may).
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "BigTIFF"),
    (b"MM\x00+", "BigTIFF"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"RIFF", "WebP"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
)


def image_signature(head: bytes) -> str | None:
    """The image format whose signature starts ``head`` (the first bytes of a file), or None."""
    return next((name for magic, name in _SIGNATURES if head.startswith(magic)), None)


def _describe_content(head: bytes) -> str:
    """What a file that is not an image holds, judged by its first bytes, for a message."""
    stripped = head.lstrip().lower()
    if stripped.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the image itself: fetch the files with `git lfs pull`"
    if stripped.startswith((b"<!doctype html", b"<html", b"<?xml", b"<svg")):
        kind = "an SVG or XML document" if stripped.startswith((b"<?xml", b"<svg")) else "an HTML page"
        return f"{kind}, e.g. a download that returned a web page"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:  # text cut inside its last character is still text
        text = head[: err.start].decode("utf-8") if err.start >= len(head) - 3 else ""
    if text and all(c.isprintable() or c in "\r\n\t" for c in text):
        snippet = " ".join(text.split())[:40]
        return f"text: {snippet!r}"
    return f"no PNG, JPEG, BMP or TIFF signature; it starts with bytes {head[:8].hex(' ')}"


def _plain(err: BaseException) -> str:
    """A decoder's message without install hints (imageio suggests plugins, e.g. ``pip install
    imageio[pyav]``, for any file it cannot open; that never helps with an image file)."""
    text = str(err).split("\nBased on the extension")[0]
    text = " ".join(line for line in text.splitlines() if "pip install" not in line)
    return " ".join(text.split())


def missing_file_reason(path: Path) -> str:
    """Why ``path`` is no file: ``not a file`` (a folder, or a link to one), ``no such file``,
    or, for a link whose target is gone (a moved dataset, an unmounted drive), where it points."""
    if path.exists():
        return "not a file"
    if path.is_symlink():
        return f"a link to {os.readlink(path)}, which does not exist"
    return "no such file"


def _read_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ImageReadError(f"{path}: {missing_file_reason(path)}")
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(64)
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read the file ({err.strerror or err})") from err
    if size == 0:
        raise ImageReadError(f"{path}: not an image (empty file)")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            return _read_tiff(path)
        from skimage import io

        array = np.asarray(io.imread(path))
        if image_signature(head) != "JPEG":
            return array
        if str(path) not in _told_orientation:
            _told_orientation.add(str(path))  # (once: a training run reads its images every epoch)
            if (note := exif_orientation_note(path)) is not None:
                log.warning(note)
        if array.ndim == 3 and array.shape[-1] == 4:
            return _cmyk_as_rgb(path)  # (a JPEG has no alpha: its four channels are ink, not RGBA)
        return array
    except ImageReadError:
        raise
    except Exception as err:  # decoders raise many types; all mean "unreadable"
        kind = image_signature(head)
        if kind is None:
            raise ImageReadError(f"{path}: not an image file ({_describe_content(head)})") from err
        raise ImageReadError(
            f"{path}: cannot read image (a damaged or unsupported {kind} file: {type(err).__name__}: {_plain(err)})"
        ) from err


#: EXIF orientations (tag 274) other than 1, as a photo viewer turns the stored pixels.
EXIF_TURNS = {2: "mirrored", 3: "turned 180°", 4: "flipped upside down", 5: "turned 90° and mirrored",
              6: "turned 90° clockwise", 7: "turned 90° and mirrored", 8: "turned 90° anticlockwise"}
_told_orientation: set[str] = set()


def exif_orientation_note(path: str | Path) -> str | None:
    """A note for a photo whose EXIF data asks viewers to turn it (None otherwise; header only).
    napari-medspike, like napari, reads the pixels as stored: the mask fits them, not the picture
    a photo viewer shows, and the model sees the picture on its side."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            turn = EXIF_TURNS.get(int(image.getexif().get(274, 1) or 1))
    except Exception:  # (no EXIF, not an image: nothing to say)
        return None
    if turn is None:
        return None
    return (f"{Path(path).name}: its EXIF data asks photo viewers to show it {turn}; it is read, segmented "
            "and its mask written as stored, as napari shows it (turn the file itself to segment it upright)")


def is_cmyk_jpeg(path: str | Path) -> bool:
    """Whether ``path`` is a JPEG of ink (CMYK or YCCK), not of light; reads its header only.
    Readers that know no better (napari's own) give its four channels as RGBA."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.format == "JPEG" and image.mode == "CMYK"
    except Exception:  # (not an image, gone, unreadable: not a CMYK JPEG either)
        return False


def cmyk_jpeg_ink_and_colours(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A CMYK JPEG (see :func:`is_cmyk_jpeg`), decoded once: its four ink channels as stored,
    ``[H, W, 4]`` uint8 (what napari's own reader shows as RGBA), and its colours, ``[H, W, 3]``."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image), np.asarray(image.convert("RGB"))


def _cmyk_as_rgb(path: Path) -> np.ndarray:
    """A CMYK (or YCCK) JPEG, as print and Photoshop workflows save them, as RGB ``[H, W, 3]``:
    read as it is, its cyan, magenta, yellow and black were taken for red, green, blue and
    alpha, and the model segmented a colour-inverted picture."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _read_tiff(path: Path) -> np.ndarray:
    """A TIFF as ``[H, W]`` or ``[H, W, C]``, using the file's own axes metadata: channels
    (``C``/``S``) go last; a stack along Z, time or an unnamed axis is refused with a message
    (it is not one 2D image)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes, array = series.axes, np.asarray(series.asarray())
    squeezed = [(a, n) for a, n in zip(axes, array.shape) if n > 1 or a in "YX"]
    array = array.reshape([n for _, n in squeezed])
    axes = "".join(a for a, _ in squeezed)
    stacked = [a for a in axes if a not in "YXCS"]
    if stacked:
        n = array.shape[axes.index(stacked[0])]
        kind = {"Z": "z-stack", "T": "time series"}.get(stacked[0], "stack")
        raise ImageReadError(
            f"{path.name}: a {kind} of {n} slices (axes {axes}), not one 2D image: open it with napari's "
            "built-in reader (the Segment dock segments a stack slice by slice)"
        )
    if "C" in axes and array.shape[axes.index("C")] not in (3, 4):
        # (samples, "S", of 2 are grey and alpha; channels, "C", of 2 are two pictures: a
        # fluorescence image's, read as grey and alpha, lost its second without a word)
        n = array.shape[axes.index("C")]
        raise ImageReadError(
            f"{path.name}: {n} channels (axes {axes}), not one grey or colour picture: save the channel you "
            "need as a file of its own, or open the file with napari's built-in reader to look at it"
        )
    for channel in "CS":
        if channel in axes:
            array = np.moveaxis(array, axes.index(channel), -1)
            axes = axes.replace(channel, "") + channel
    return array


#: Length units as TIFF files name them (ImageJ's ``unit``), and as napari's layers take them.
#: (µ is the micro sign or the Greek mu; ImageJ may write it escaped, as the six characters \u00B5.)
LENGTH_UNITS = {"micron": "µm", "microns": "µm", "\u00b5m": "µm", "\u03bcm": "µm", r"\u00b5m": "µm", "um": "µm",
                "micrometer": "µm", "nm": "nm", "nanometer": "nm", "mm": "mm", "millimeter": "mm", "cm": "cm",
                "centimeter": "cm", "m": "m", "meter": "m"}
#: ImageJ's names of napari's length units, for writing (ImageJ reads ``micron``; ASCII only).
IMAGEJ_UNITS = {"micrometer": "micron", "nanometer": "nm", "millimeter": "mm", "centimeter": "cm", "meter": "m"}


def tiff_pixel_size(path: str | Path) -> tuple[tuple[float, float], str | None] | None:
    """The pixel size ``((y, x), unit)`` a TIFF records: ImageJ's calibration (its resolution and
    length unit; ``None`` as the unit when it names none), or resolution in centimetres (a
    scanner's; given in µm). ``None`` when the file records no size, or only the dots per inch
    of photo software, which say nothing of what the picture shows."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            tags = page.tags
            if "XResolution" not in tags or "YResolution" not in tags:
                return None
            (xn, xd), (yn, yd) = tags["XResolution"].value, tags["YResolution"].value
            unit_code = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
            imagej = tif.imagej_metadata if tif.is_imagej else None
    except Exception:  # an unreadable file is said by the image reader, not here
        return None
    if not (xn and yn and xd and yd):
        return None
    size = (yd / yn, xd / xn)  # the tags hold pixels per unit: their inverse is the pixel's size
    if imagej is not None:
        unit = LENGTH_UNITS.get(str(imagej.get("unit", "")).strip().lower())
        return (size, unit) if (size != (1.0, 1.0) or unit) else None
    if unit_code == 3:  # centimetre
        return (size[0] * 1e4, size[1] * 1e4), "µm"
    return None


def intensity_range(array: np.ndarray) -> tuple[float, float] | None:
    """The ``(lo, hi)`` that :func:`to_rgb_float` maps to ``[0, 1]`` for this image (None: its
    fixed rule applies, 8-bit or bool, or floats already in [0, 1]); computed without copying."""
    a = np.asarray(array)
    if a.dtype == np.bool_ or a.dtype == np.uint8:
        return None
    if np.issubdtype(a.dtype, np.integer):
        lo = min(float(a.min(initial=0)), 0.0)  # signed images with negative values: from their minimum
        return lo, float(max(a.max(initial=0), lo + 1))
    if np.issubdtype(a.dtype, np.floating):
        lo, hi = float(a.min(initial=0)), float(a.max(initial=0))
        if lo >= 0 and hi <= 1:
            return None
        lo = min(lo, 0.0)  # as integers: from 0, or from the minimum where values lie below 0
        if lo == 0 and hi <= 255 and _holds_whole_numbers(a):  # an 8-bit image stored as floats
            return 0.0, 255.0
        return lo, hi
    return None


def _holds_whole_numbers(a: np.ndarray, samples: int = 250_000) -> bool:
    """Whether a float image holds whole numbers only (checked on an even grid of about
    ``samples`` pixels, without copying the image)."""
    step = max(1, int(np.sqrt(a.shape[0] * a.shape[1] / samples)))  # (an image: at least 2D)
    grid = a[::step, ::step]
    return bool(np.all(grid == np.floor(grid)))


def colour_channels(a: np.ndarray) -> np.ndarray:
    """The channels of an ``[H, W, C]`` image that hold its picture, without alpha: grey of grey +
    alpha, the colours of RGB(A); a view. An image's intensity range is theirs, not its alpha's."""
    return a[..., :1] if a.shape[-1] == 2 else a[..., :3]


def to_rgb_float(array: np.ndarray, name: str = "image", value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Grey, RGB or RGBA (8-bit, 16-bit or float) -> float32 ``[H, W, 3]`` in ``[0, 1]``.

    8-bit images are divided by 255; wider integers and floats outside ``[0, 1]`` are mapped from
    0 (or from their minimum, where values lie below 0) to their maximum; floats in ``[0, 1]``
    stay as they are, and floats that hold whole numbers up to 255 (an 8-bit image converted
    to float) are divided by 255, so that they give the same mask as the 8-bit image.

    ``value_range`` overrides the ``(lo, hi)`` taken from the pixels themselves (any image but
    8-bit and bool ones; values outside it are clipped): parts of one image, or the frames of a
    stack, are scaled alike (:func:`intensity_range` of the whole), and napari's docks pass the
    layer's contrast limits (the image as napari shows it)."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[-1] not in (3, 4):
        a = np.moveaxis(a, 0, -1)  # channel-first TIFF
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4):
        raise ImageReadError(
            f"{name}: expected a 2D grey, RGB or RGBA image, got an array of shape {a.shape}"
        )
    if 0 in a.shape[:2]:
        raise ImageReadError(f"{name}: an empty image ({a.shape[0]} x {a.shape[1]} pixels)")
    a = colour_channels(a)
    if a.dtype == np.bool_:
        out = a.astype(np.float32)
    elif np.issubdtype(a.dtype, np.integer):
        # 8-bit: full range; 16-bit and wider: scale by the image's own maximum (12-bit
        # cameras fill only part of the 16-bit range); signed images with negative values map
        # their minimum to 0
        lo, top = (0.0, 255.0) if a.dtype == np.uint8 else (value_range or intensity_range(a) or (0.0, 1.0))
        top = max(top, lo + 1e-6)
        out = a.astype(np.float32)  # the one full-size copy: scaled in place
        if lo:
            out -= np.float32(lo)
        out *= np.float32(1.0 / (top - lo))
        np.clip(out, 0.0, 1.0, out=out)
    elif np.issubdtype(a.dtype, np.floating):
        out = a.astype(np.float32)
        if not np.isfinite(out).all():
            raise ImageReadError(f"{name}: contains NaN or infinite values")
        lo, hi = value_range or intensity_range(out) or (0.0, 1.0)
        if (lo, hi) != (0.0, 1.0) or value_range is not None:
            if hi > lo:
                out -= np.float32(lo)
                out *= np.float32(1.0 / (hi - lo))
                np.clip(out, 0.0, 1.0, out=out)
            else:
                out[:] = 0
    else:
        raise ImageReadError(f"{name}: unsupported pixel type {a.dtype}")
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return np.ascontiguousarray(out)


def to_rgb_uint8(array: np.ndarray, name: str = "image", value_range: tuple[float, float] | None = None) -> np.ndarray:
    """:func:`to_rgb_float` as 8-bit ``[H, W, 3]``: the same pixels, and 8-bit grey, RGB or
    RGBA arrays (channels last) are taken as they are, without a float copy (a 12-megapixel
    photo: about 0.3 s less). ``value_range``: as for :func:`to_rgb_float`."""
    a = np.asarray(array)
    if a.dtype == np.uint8 and a.size:
        if a.ndim == 3 and a.shape[-1] in (3, 4):
            return np.ascontiguousarray(a[..., :3])
        if a.ndim == 2:
            return np.repeat(a[..., None], 3, axis=-1)
    return (to_rgb_float(a, name=name, value_range=value_range) * 255).round().astype(np.uint8)


def warm_up() -> None:
    """Import the image decoders now (the first read would, from a worker thread)."""
    import tifffile  # noqa: F401  (imported for its side effect: loaded now)
    from skimage import io  # noqa: F401


def read_pixels(path: str | Path) -> np.ndarray:
    """Read a 2D image file's pixels as stored (8-bit, 16-bit or float; grey, RGB or RGBA),
    without converting them: a quarter of the memory of :func:`read_image` for 8-bit images.
    :func:`~napari_medspike.inference.predictor.predict` takes this array as it is."""
    path = Path(path)
    pixels = _read_array(path)
    h, w = image_hw(pixels, str(path))
    if min(h, w) < 1:
        raise ImageReadError(f"{path}: expected a 2D grey, RGB or RGBA image, got an array of shape {pixels.shape}")
    if np.issubdtype(pixels.dtype, np.floating) and not np.isfinite(pixels).all():
        raise ImageReadError(f"{path}: contains NaN or infinite values")
    return pixels


def read_image(path: str | Path) -> np.ndarray:
    """Read a 2D image file as float32 ``[H, W, 3]`` in ``[0, 1]`` (png, jpg, bmp, tif)."""
    path = Path(path)
    return to_rgb_float(_read_array(path), name=str(path))


def image_hw(image: np.ndarray, name: str = "image") -> tuple[int, int]:
    """Height and width of a 2D grey/RGB(A) array (channels first or last); raises
    :class:`ImageReadError` for any other shape (a stack of images, a 1D array). A lazy array
    (dask, zarr) is not read: only its shape is."""
    shape = tuple(np.shape(image))
    if len(shape) == 3 and shape[0] in (3, 4) and shape[-1] not in (3, 4):
        return int(shape[1]), int(shape[2])
    if len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 2, 3, 4)):
        return int(shape[0]), int(shape[1])
    stack = " (a stack of images? segment them one by one, or open the stack in napari's Segment dock)" if len(shape) >= 3 else ""
    raise ImageReadError(f"{name}: expected a 2D grey, RGB or RGBA image, got an array of shape {shape}{stack}")


def to_binary_mask(array: np.ndarray, name: str = "mask") -> np.ndarray:
    """A mask array -> bool ``[H, W]``: the one rule by which napari-medspike reads masks.

    **0 is background.** A mask with at most two distinct values (0/255, 0/1, a label image
    of one object, all 255, all 0) is foreground wherever it is not 0, so a mask of one value
    is read as it is. So is a label image (objects numbered 1, 2, ..., as instance masks,
    napari's Labels files and GlaS's annotations hold; see :func:`is_label_image`). Any other
    mask with more values (JPEG compression noise, anti-aliased or soft masks) is foreground
    where it reaches half its largest value, so that noise near 0 stays background; a warning
    naming ``name`` says so. Colour masks (``[H, W, 3]`` or ``[H, W, 4]``) use their largest
    colour channel (alpha is ignored); ``[H, W, 1]`` is grey, ``[H, W, 2]`` grey and alpha. A mask
    whose colour is one value everywhere and whose alpha is not (a cut-out saved with a
    transparent background) is read from its alpha, with a warning.
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[-1] in (2, 4):
        colour, alpha = colour_channels(a), a[..., -1]
        if colour.min() == colour.max() and alpha.min() != alpha.max():
            log.warning("%s: one colour everywhere, the shape in its alpha channel: read from the alpha", name)
            a = alpha
    if a.ndim == 3 and a.shape[-1] in (1, 2, 3, 4):
        a = a[..., :3].max(axis=-1) if a.shape[-1] > 2 else a[..., 0]
    if a.ndim != 2:
        raise ImageReadError(f"{name}: expected a 2D mask, got an array of shape {a.shape}")
    if a.dtype == np.bool_:
        return a.copy()
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ImageReadError(f"{name}: unsupported mask pixel type {a.dtype}")
    values = np.unique(a)
    if values.size <= 2 or is_label_image(a):
        return a > 0
    top = float(values[-1])
    log.warning("%s: mask has %d distinct values; foreground where it reaches half of its largest (%g)",
                name, values.size, top)
    return a >= top / 2 if top > 0 else np.zeros(a.shape, bool)


def inside_fraction(mask: np.ndarray) -> float | None:
    """Of an integer 2D mask's pixels valued between 0 and half its largest value, the fraction
    whose four neighbours all hold their own value (the insides of objects): high in a label
    image, near 0 in a JPEG or anti-aliased mask, whose low values are noise and edges. ``None``
    when such pixels are at most 0.1 % of the mask's (read as ``> 0`` or cut at half, it is then
    the same mask within 0.1 %), or the mask is not an integer 2D array."""
    a = np.asarray(mask)
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.integer) or a.size == 0:
        return None
    low = (a > 0) & (a < int(a.max()) / 2)
    n = int(np.count_nonzero(low))
    if n <= 0.001 * np.count_nonzero(a):
        return None
    inside = low.copy()
    inside[1:] &= a[1:] == a[:-1]
    inside[:-1] &= a[:-1] == a[1:]
    inside[:, 1:] &= a[:, 1:] == a[:, :-1]
    inside[:, :-1] &= a[:, :-1] == a[:, 1:]
    return np.count_nonzero(inside) / n


def is_label_image(mask: np.ndarray) -> bool:
    """Whether an integer 2D mask is a label image: its values below half its largest form
    objects, not edges and noise. Cut at half its largest value, a label image would lose its
    lower-numbered objects; read as ``> 0``, a JPEG mask would gain its compression noise.

    The test: :func:`inside_fraction` is at least 0.2. On all 1224 non-empty masks of this
    project's five training sets, instance labels of the masks score 0.71-0.99 (MoNuSeg's small
    nuclei lowest), the same masks JPEG-compressed at quality 75 or 95 or scaled down with
    anti-aliasing at most 0.002 (``training/mask_rule_check.py``). An integer mask with (almost)
    no value between 0 and half its largest counts as one (``inside_fraction`` is ``None``):
    labels 1 and 2 only, or a label image whose object 1 is a speck of one pixel."""
    a = np.asarray(mask)
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.integer) or a.size == 0:
        return False
    fraction = inside_fraction(a)
    return fraction is None or fraction >= 0.2


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask file as bool ``[H, W]``; see :func:`to_binary_mask` for the rule (value > 0
    is foreground)."""
    path = Path(path)
    return to_binary_mask(_read_array(path), name=str(path))


def image_to_tensor(image: np.ndarray) -> "torch.Tensor":  # noqa: F821 (torch imported lazily)
    """float ``[H, W, 3]`` -> ``[1, 3, H, W]`` tensor for a model."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]


#: Float working memory of :func:`reduced_rgb_float` (MB per band of rows).
BAND_MB = 64


def reduced_rgb_float(array: np.ndarray, factor: int, name: str = "image", band_mb: int | None = None,
                      value_range: tuple[float, float] | None = None) -> np.ndarray:
    """:func:`to_rgb_float` of a large image shrunk ``factor`` times by box averaging, without
    ever holding the full-size float copy: rows are converted in bands of about ``band_mb``
    MB (:data:`BAND_MB`). Edge rows and columns that do not fill a box are dropped (less than ``factor`` pixels)."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[-1] not in (3, 4):
        a = np.moveaxis(a, 0, -1)  # channel-first TIFF
    if factor < 2:
        return to_rgb_float(a, name, value_range)
    h, w = a.shape[:2]
    oh, ow = h // factor, w // factor
    if not oh or not ow:
        raise ImageReadError(f"{name}: {h}x{w} is too small to shrink {factor} times")
    value_range = value_range or intensity_range(colour_channels(a) if a.ndim == 3 else a)
    band_mb = BAND_MB if band_mb is None else band_mb
    rows = max(1, (band_mb << 20) // max(1, factor * ow * factor * 3 * 4))
    out = np.empty((oh, ow, 3), np.float32)
    for start in range(0, oh, rows):
        stop = min(oh, start + rows)
        band = to_rgb_float(a[start * factor : stop * factor, : ow * factor], name, value_range)
        out[start:stop] = band.reshape(stop - start, factor, ow, factor, 3).mean(axis=(1, 3))
    return out


def box_shrink(h: int, w: int, size: int) -> int:
    """How many times resize mode box-averages an ``h x w`` image before resizing it to
    ``size`` (below 2: not at all); it keeps at least twice ``size`` pixels on the short side."""
    return min(h, w) // (2 * size)


def resize_extent(h: int, w: int, size: int) -> tuple[int, int]:
    """The part of an ``h x w`` image (from its top left) that resize mode's input stands for: all
    of it, or, once box-averaged (:func:`box_shrink`), the whole boxes; the last partial ones are
    dropped. A map of the model's goes back over this extent, not the whole image."""
    shrink = box_shrink(h, w, size)
    return (h // shrink * shrink, w // shrink * shrink) if shrink >= 2 else (h, w)


def rgb_for_resize(image: np.ndarray, size: int, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Float RGB ``[h, w, 3]`` of ``image`` as resize mode hands it to the resize to ``size``:
    box-averaged first when large (:func:`box_shrink`), so no full-size float copy exists (a
    12k x 12k RGB image would need 1.7 GB). Prediction and the spike inspector both start here,
    so the inspected pass sees the input that Segment segments."""
    h, w = image_hw(image)
    shrink = box_shrink(h, w, size)
    if shrink >= 2:
        return reduced_rgb_float(image, shrink, value_range=value_range)
    return to_rgb_float(image, value_range=value_range)
