"""Image and result layers: their pixels, the slice shown, where they lie on the canvas and
which image a result was made for."""

from __future__ import annotations

import re
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_info

if TYPE_CHECKING:  # annotations only
    from napari.layers import Image, Labels, Layer
    from napari.viewer import Viewer


def image_data_2d(layer: Image, viewer: Viewer | None = None, lazy: bool = False) -> np.ndarray:
    """A 2D image layer's pixels; for a stack, the slice the viewer shows (when ``viewer`` is
    given); a clear error for multiscale layers and other shapes. ``lazy=True`` leaves a lazy
    array (dask, zarr) unread, for a job to read off the GUI thread."""
    read = (lambda array: array) if lazy else np.asarray
    if getattr(layer, "multiscale", False):
        raise ValueError(f"'{layer.name}' is multiscale: open the full-resolution image instead")
    show_colours_of_cmyk_jpeg(layer)
    tell_of_exif_turn(layer)
    refuse_channels_as_slices(layer)
    if layer.ndim == 3 and viewer is not None:
        return read(layer.data[shown_slice(layer, viewer)])
    if layer.ndim != 2:
        raise ValueError(f"'{layer.name}' has {layer.ndim} dimensions: select a 2D image or save one slice")
    return read(layer.data)


def shown_slice(layer: Layer, viewer: Viewer) -> int:
    """Index along the first axis of a 3D layer (a stack or video) of the slice the viewer shows.

    Raises ``ValueError`` saying what to do where no one slice of it is shown: a 3D view, axes
    turned so that the canvas shows its frames' axis, or the slider at none of its frames."""
    dims, axis = viewer.dims, viewer.dims.ndim - 3
    if dims.ndisplay != 2:
        raise ValueError(f"the viewer shows '{layer.name}' in 3D: switch to the 2D view (the square button at "
                         "the bottom left) and move the slider to one frame")
    if axis in dims.displayed:
        raise ValueError(f"the canvas shows the frames' axis of '{layer.name}': give the viewer its axes back "
                         "(napari's 'Roll dimensions' or 'Transpose' buttons, bottom left) so that a slider moves "
                         "through its frames")
    place = dims.current_step[axis] * dims.range[axis].step + dims.range[axis].start
    index = round((place - layer.translate[0]) / layer.scale[0])
    if not 0 <= index < layer.data.shape[0]:
        raise ValueError(f"the slider is at none of the {layer.data.shape[0]} frames of '{layer.name}' (other "
                         "layers reach further along that axis): move it onto one of them")
    return int(index)


def shown_range(layer: Image) -> tuple[float, float] | None:
    """The intensities napari shows as black and white in ``layer`` (its contrast limits), for
    images that are not 8-bit: the model is given the image as napari shows it (a 16-bit scan
    whose values lie between 1000 and 2020 looked right and came out empty, scaled from 0). None
    for 8-bit and bool images, which keep their fixed rule."""
    dtype = getattr(layer.data, "dtype", None)
    if dtype is None or np.dtype(dtype) in (np.dtype(np.uint8), np.dtype(np.bool_)):
        return None
    lo, hi = (float(v) for v in layer.contrast_limits)
    return (lo, hi) if hi > lo else None


def range_note(value_range: tuple[float, float] | None) -> str:
    """``, contrast 1000-2020`` for a status line when :func:`shown_range` applied, else empty."""
    return "" if value_range is None else f", contrast {value_range[0]:.4g}–{value_range[1]:.4g}"


def frame_numbers(layer: Layer) -> list[int] | None:
    """The video frame number of each slice of a stack layer (its metadata's ``frames``, which
    the reader records: a long video is read with every k-th frame), else None."""
    frames = getattr(layer, "metadata", {}).get("frames")
    if (not isinstance(frames, (list, tuple)) or getattr(layer, "ndim", 0) != 3
            or len(frames) != np.shape(layer.data)[0] or not all(isinstance(f, (int, np.integer)) for f in frames)):
        return None
    return [int(f) for f in frames]


def mask_frame_for(labels: Labels, image: Image, viewer: Viewer) -> int:
    """The frame of the stack mask ``labels`` that corrects the frame of the stack ``image`` shown
    now: the same index. Raises ``ValueError`` when the mask has another number of frames, or when
    the viewer shows another of its frames over the image's (their scale or translate along the
    frames differ), so that a mask is never stored with a frame it was not painted on."""
    frames, index = labels.data.shape[0], shown_slice(image, viewer)
    if frames != image.data.shape[0]:
        raise ValueError(f"'{labels.name}' has {frames} frames and '{image.name}' {image.data.shape[0]}: "
                         f"choose a mask made for '{image.name}'")
    if (shown := shown_slice(labels, viewer)) != index:
        raise ValueError(f"the viewer shows frame {shown} of '{labels.name}' over frame {index} of '{image.name}' "
                         "(their scale or translate along the frames differ): give the mask the image's, e.g. in "
                         f"the console: viewer.layers['{labels.name}'].scale = viewer.layers['{image.name}'].scale")
    return index


def placed_alike(a: Any, b: Any, axes: int = 2) -> bool:
    """Whether layers ``a`` and ``b`` lie on the same place of the canvas in their last ``axes``
    axes (scale and translate), so that their pixels line up as shown."""
    return (np.allclose(a.scale[-axes:], b.scale[-axes:], rtol=1e-6)
            and np.allclose(a.translate[-axes:], b.translate[-axes:], rtol=1e-6, atol=1e-9))


def show_colours_of_cmyk_jpeg(layer: Image) -> bool:
    """A layer opened from a CMYK JPEG by napari's own reader holds the file's cyan, magenta,
    yellow and black as red, green, blue and alpha: the picture shows wrong (transparent where
    there is no black) and the model segmented inverted colours into an empty mask. Put its
    colours in the layer instead (the file stays as it is) and say so; returns whether it did."""
    from ..data.io import JPEG_SUFFIXES, cmyk_jpeg_ink_and_colours, is_cmyk_jpeg

    path = getattr(getattr(layer, "source", None), "path", None)
    shape = tuple(getattr(layer.data, "shape", ()))
    if not path or not getattr(layer, "rgb", False) or len(shape) != 3 or shape[-1] != 4:
        return False
    if Path(path).suffix.lower() not in JPEG_SUFFIXES or not is_cmyk_jpeg(path):
        return False
    ink, rgb = cmyk_jpeg_ink_and_colours(path)
    if ink.shape != shape or not np.array_equal(np.asarray(layer.data), ink):  # (edited, or another file now)
        return False
    layer.data = rgb
    show_info(f"'{layer.name}' is a CMYK JPEG (ink, as print software saves it): napari showed its ink as "
              "red, green, blue and transparency; the layer now holds its colours (the file is unchanged)")
    return True


_TOLD_TURN: weakref.WeakSet = weakref.WeakSet()


def tell_of_exif_turn(layer: Image) -> None:
    """Once per layer: say that the photo it was opened from asks to be shown turned (EXIF), which
    neither napari nor the model does (see :func:`~napari_medspike.data.io.exif_orientation_note`)."""
    from ..data.io import JPEG_SUFFIXES, exif_orientation_note

    path = getattr(getattr(layer, "source", None), "path", None)
    if not path or layer in _TOLD_TURN or Path(path).suffix.lower() not in JPEG_SUFFIXES:
        return
    _TOLD_TURN.add(layer)
    if (note := exif_orientation_note(path)) is not None:
        show_info(note)


def refuse_channels_as_slices(layer: Image) -> None:
    """Raise a ``ValueError`` that says what to do for a colour (or grey + alpha) image that napari
    shows as a stack of thin slices: ``[H, W, 2|3|4]`` not marked RGB (napari's guess for images
    with a side of 30 pixels or less, or an image added with ``rgb=False``)."""
    shape = tuple(layer.data.shape)
    if getattr(layer, "rgb", False) or len(shape) != 3 or shape[-1] not in (2, 3, 4):
        return  # (slices 2-4 pixels wide are never a stack to segment, however small the image)
    again = "viewer.add_image(data[..., 0])" if shape[-1] == 2 else "viewer.add_image(data, rgb=True)"
    raise ValueError(f"'{layer.name}' ({' x '.join(map(str, shape))}) looks like one image with {shape[-1]} "
                     f"channels, but napari shows it as {shape[0]} slices of {shape[1]} x {shape[-1]} pixels: "
                     f"open it again as one image, e.g. in the console: data = viewer.layers['{layer.name}'].data; "
                     f"{again}")


def image_data(layer: Image) -> Any:
    """An image layer's pixels: one 2D image or a stack ``[N, H, W(, 3)]`` (frames, tiles,
    slices); a clear error for multiscale layers, colour images shown as slices and more
    dimensions. A lazy array (dask, zarr) stays lazy: the job reads it slice by slice, off the
    GUI thread."""
    if getattr(layer, "multiscale", False):
        raise ValueError(f"'{layer.name}' is multiscale: open the full-resolution image instead")
    if layer.ndim not in (2, 3):
        raise ValueError(f"'{layer.name}' has {layer.ndim} dimensions: select a 2D image or a stack of them")
    show_colours_of_cmyk_jpeg(layer)
    tell_of_exif_turn(layer)
    refuse_channels_as_slices(layer)
    return layer.data


def viewer_grid(viewer: Viewer) -> Any:
    """The viewer's grid settings (``viewer.canvas.grid`` from napari 0.9, ``viewer.grid`` before)."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid


def show_for_editing(viewer: Viewer, mask: Labels, image: Image | None = None) -> None:
    """Make ``mask`` ready to paint: the grid off (the mask lies over its image, not in a cell
    of its own), the mask and its image visible with no other image drawn over that image (the
    inspector's spike maps) nor masks segmented for other images, the mask on top of the layer
    list and the active layer (napari's paint tools act on it)."""
    from napari.layers import Image

    if mask is None or mask not in viewer.layers:
        return
    grid = viewer_grid(viewer)
    if grid.enabled:  # out of the inspector's grid: no cell titles, the image filling the canvas
        grid.enabled = False
        for layer in viewer.layers:
            layer.name_overlay.visible = False
        viewer.reset_view()
    for layer in (image, mask):
        if layer is not None and layer in viewer.layers:
            layer.visible = True
    if image is not None and image in viewer.layers:
        for layer in list(viewer.layers)[viewer.layers.index(image) + 1:]:
            if layer is not mask and (isinstance(layer, Image) or made_for_another_image(layer, image, viewer)):
                layer.visible = False
    index, top = viewer.layers.index(mask), len(viewer.layers) - 1
    if index != top:
        viewer.layers.move(index, top + 1)
    viewer.layers.selection.active = mask


#: Metadata key that marks the layers the Spike inspector made.
MAP_TAG = "medspike_inspector_map"


def is_users_image(layer: Layer | None) -> bool:
    """Whether ``layer`` is an image the user opened or added, not one of this plugin's results
    (probabilities, the inspector's maps)."""
    from napari.layers import Image

    metadata = getattr(layer, "metadata", None) or {}
    return isinstance(layer, Image) and "source_image" not in metadata and MAP_TAG not in metadata


def same_layer(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are the same napari layer. Not ``is``: napari hands a plugin's
    widget a proxy of the viewer, whose ``viewer.layers[name]`` wraps the layer in a new proxy
    each time (iterating gives the layers themselves), so the same layer can be two objects."""
    return a is b or (a is not None and b is not None
                      and getattr(a, "unique_id", None) is not None and a.unique_id == getattr(b, "unique_id", None))


def file_of(layer: Layer) -> str:
    """The file a layer was opened from (napari's source, else the path its metadata records),
    or ``""``."""
    return str(getattr(getattr(layer, "source", None), "path", None) or layer.metadata.get("path", ""))


def link_to_image(image_layer: Image) -> dict[str, str]:
    """Metadata that ties a result layer (probability, mask) to the image it was made for: the
    image's name, napari's ``unique_id`` of its layer, which a rename keeps, and its file when
    it was opened from one (which keeps the drafts of two pictures of one name apart)."""
    path = file_of(image_layer)
    return {"source_image": image_layer.name, "source_image_id": str(image_layer.unique_id),
            **({"source_path": path} if path else {})}


def image_made_for(layer: Layer, viewer: Viewer) -> Image | None:
    """The open layer ``layer`` was made for (:func:`link_to_image`): found by its id, so a renamed
    image keeps its masks; else by name (an image opened again, a sample's ground truth);
    ``None`` when ``layer`` is tied to no image or its image is closed."""
    from napari.layers import Image

    metadata = getattr(layer, "metadata", None) or {}
    images = [candidate for candidate in viewer.layers if isinstance(candidate, Image)]
    made_for = metadata.get("source_image_id")
    for candidate in images if made_for is not None else ():
        if str(candidate.unique_id) == made_for:
            return candidate
    name = metadata.get("source_image")
    # a sample opened twice: napari names the second image and its ground truth "<name> [1]"
    copy = re.search(r" \[\d+\]$", str(getattr(layer, "name", ""))) if made_for is None else None
    names = ([f"{name}{copy.group(0)}"] if copy else []) + [name]
    return next((candidate for wanted in names for candidate in images if candidate.name == wanted), None)


def made_for_another_image(layer: Layer, image: Image, viewer: Viewer) -> bool:
    """Whether ``layer`` is a result made for an image other than ``image`` (open or closed)."""
    metadata = getattr(layer, "metadata", None) or {}
    return "source_image" in metadata and not same_layer(image_made_for(layer, viewer), image)


def placement_of(image_layer: Image, nd: int) -> dict[str, Any]:
    """Where a result of ``nd`` axes goes to lie on ``image_layer``: its scale, translate and
    units on those axes, and its rotation, shear and affine transform when it has ``nd`` axes."""
    placement: dict[str, Any] = {"scale": tuple(image_layer.scale[-nd:]),
                                 "translate": tuple(image_layer.translate[-nd:])}
    units = getattr(image_layer, "units", None)
    if units is not None:
        placement["units"] = tuple(units[-nd:])
    if image_layer.ndim == nd:
        placement.update(rotate=image_layer.rotate, shear=image_layer.shear, affine=image_layer.affine)
    return placement


def axis_aligned(layer: Layer) -> bool:
    """Whether ``layer`` is only scaled and moved (no rotation, shear or affine transform)."""
    return (np.allclose(layer.rotate, np.eye(layer.ndim)) and np.allclose(layer.shear, 0)
            and np.allclose(layer.affine.affine_matrix, np.eye(layer.ndim + 1)))


def world_matrix_of(layer: Layer) -> np.ndarray:
    """The ``(ndim + 1)²`` matrix that takes ``layer``'s pixel coordinates to the world: its scale,
    translate, rotation and shear, then its affine transform (napari's order)."""
    from napari.utils.transforms import Affine

    own = Affine(scale=layer.scale, translate=layer.translate, rotate=layer.rotate, shear=layer.shear,
                 ndim=layer.ndim)
    return layer.affine.affine_matrix @ own.affine_matrix


def same_setting(now: Any, wanted: Any) -> bool:
    """Whether a layer's ``now`` value of scale, translate, rotate, shear, affine or units already
    is ``wanted`` (numbers compared as numbers, units by their names)."""
    now, wanted = (getattr(value, "affine_matrix", value) for value in (now, wanted))  # (napari's Affine)
    try:
        return np.shape(now) == np.shape(wanted) and np.allclose(np.asarray(now, float), np.asarray(wanted, float))
    except (TypeError, ValueError):  # units
        return [str(v) for v in np.ravel(np.asarray(now, dtype=object))] == \
            [str(v) for v in np.ravel(np.asarray(wanted, dtype=object))]
