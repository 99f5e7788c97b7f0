"""Spike inspector dock widget: spike maps per timestep, the four interactions, firing rates, energy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, Label, PushButton, SpinBox

from ..analysis.energy import EnergyReport
from ..analysis.maps import INTERACTION_VIEWS, REDUCTIONS, StageMaps, display_limits, inspect_steps, stage_of
from .docking import (
    call_when_closed,
    call_when_shown,
    connect_until_closed,
    follow_layers,
    image_box,
    tab_with_sibling_docks,
)
from .jobs import start_worker
from .layers import (
    axis_aligned,
    is_users_image,
    MAP_TAG,
    same_setting,
    shown_range,
    shown_slice,
    viewer_grid,
    world_matrix_of,
)
from .layout import (
    compact_label,
    DockContainer,
    DockPlot,
    elide,
    full_width,
    make_narrow,
    plot_theme,
    show_text,
)
from .session import model_label, selected_image_and_model, session_of

if TYPE_CHECKING:  # annotations only
    from napari.layers import Image, Layer
    from napari.viewer import Viewer

#: What the four interaction maps mean, for tooltips and the README.
INTERACTION_HELP = (
    "The four interactions of spike-based decomposed attention pair the active (A: fired) or "
    "inactive (I: silent) part of the queries Q with that of the keys K: AA = active Q with "
    "active K, AI = active Q with inactive K, IA = inactive Q with active K, II = inactive Q with "
    "inactive K. Each map is that interaction's output O at every pixel (mean over channels), "
    "with a contrast of its own (hover a pixel for its value)."
)
DECOMPOSED_HELP = (
    "The same four maps as their sum AA+AI+IA+II (how much reaches each pixel: in SDSA the values' "
    "spikes, which is why the four maps look alike), the shares carried by active queries "
    "(AA+AI) and by active keys (AA+IA), and φ: above 0 where active queries meet active keys more "
    "often than those shares predict, 0 where they are independent. The four maps follow from these "
    "exactly; nothing is added."
)
#: The colour bar beside each map in the grid, (width, height) in screen pixels, at the bottom
#: right of its cell (the cell's name is at its top left).
COLORBAR_SIZE = (10, 70)
#: One colormap for counts (the four interactions are never negative), another for shares, a
#: diverging one for signed maps; each map has its own contrast limits.
INTERACTION_COLORMAP, SHARE_COLORMAP, SIGNED_COLORMAP = "magma", "viridis", "bwr"
VIEWS = ("side by side", "overlay")
#: The spikes over the image are added to it in this colormap, from their median (black: adds
#: nothing) to their maximum, so that the image stays readable and where more spikes fire glows.
OVERLAY_SPIKE_COLORMAP = "inferno"
#: Metadata keys of the spike layer's contrast limits in each view.
GRID_LIMITS, OVERLAY_LIMITS = "medspike_grid_limits", "medspike_overlay_limits"


class MapPlacement:
    """Where an inspection's maps go in the viewer: over ``image_layer`` (its pixel size, offset,
    units and any rotation, shear or affine), at ``frame`` of a stack, and with a time axis of
    their own. ``across`` lists the frame axes of other layers, as (frames, step, start), over
    which a 2D image's maps in time repeat (``across_units``: their units)."""

    def __init__(self, image_layer: Image, maps: StageMaps, frame: int | None = None,
                 across: list[tuple[int, float, float]] | None = None, across_units: tuple[str, ...] = ()) -> None:
        self.image_layer, self.maps, self.frame = image_layer, maps, frame
        self.across, self.across_units = list(across or []), across_units
        self.scale = tuple(maps.scale[i] * image_layer.scale[-2 + i] for i in range(2))
        self.translate = tuple(maps.translate[i] * image_layer.scale[-2 + i] + image_layer.translate[-2 + i]
                               for i in range(2))
        self.at_frame: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())
        if frame is not None:
            self.at_frame = ((image_layer.scale[-3],),
                             (image_layer.translate[-3] + frame * image_layer.scale[-3],))
        # the image's units on the axes the maps share with it (without them napari warned of
        # inconsistent units six times per inspection and stopped drawing units)
        units = tuple(str(u) for u in getattr(image_layer, "units", ()))
        self.spatial_units = units[-2:] if len(units) >= 2 else ("pixel", "pixel")
        self.frame_units = (units[-3],) if frame is not None and len(units) >= 3 else ("pixel",) * (frame is not None)

    def placed(self, array: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """The array and where it goes: ``[T, h, w]`` in time, ``[h, w]`` flat, each with a
        frame axis of one frame for a stack. A 2D image's maps in time, while other layers
        have frame axes, repeat (a view, no copy) across those frames, so that time gets
        an axis of its own instead of sharing theirs."""
        (sy, sx), (ty, tx) = self.scale, self.translate
        in_time = array.ndim == 3
        if self.frame is not None:
            array = np.expand_dims(array, -3)
        elif in_time and self.across:
            across = self.across
            shape = (array.shape[0], *(n for n, _, _ in across), *array.shape[-2:])
            array = np.broadcast_to(array.reshape(array.shape[0], *(1,) * len(across), *array.shape[-2:]), shape)
            return array, {"scale": (1.0, *(step for _, step, _ in across), sy, sx),
                           "translate": (0.0, *(start for _, _, start in across), ty, tx),
                           "units": ("pixel", *self.across_units, *self.spatial_units)}
        scale = (1.0,) * in_time + self.at_frame[0] + (sy, sx)
        translate = (0.0,) * in_time + self.at_frame[1] + (ty, tx)
        return array, {"scale": scale, "translate": translate,
                       "units": ("pixel",) * in_time + self.frame_units + self.spatial_units}

    def on_image(self, array: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """:meth:`placed`, turned, sheared and transformed as the image is (its rotate, shear and
        affine act on its own axes: the maps' last ones, given as one affine matrix)."""
        array, where = self.placed(array)
        image_layer, maps = self.image_layer, self.maps
        if axis_aligned(image_layer):
            return array, {**where, "affine": np.eye(array.ndim + 1)}
        # map pixels to the image's pixels (its last axes), then the image's pixels to the world
        nd, lead = image_layer.ndim, array.ndim - image_layer.ndim
        into_image = np.eye(nd + 1)
        into_image[-3:-1, -3:-1] = np.diag(maps.scale)
        into_image[-3:-1, -1] = maps.translate
        if self.frame is not None:
            into_image[-4, -1] = self.frame
        matrix = np.eye(array.ndim + 1)
        matrix[:lead, :lead] = np.diag(where["scale"][:lead])
        matrix[:lead, -1] = where["translate"][:lead]
        matrix[lead:, lead:] = world_matrix_of(image_layer) @ into_image
        return array, {**where, "scale": (1.0,) * array.ndim, "translate": (0.0,) * array.ndim, "affine": matrix}


def inspection_summary(maps: StageMaps, report: EnergyReport, interactions_view: str, decomposed: bool,
                       slider: str = "t") -> tuple[str, str]:
    """The dock's text under Inspect for an inspection (timesteps and the slider that moves
    through them, firing rates, synaptic operations and energy, what the interaction maps
    show) and a note for its tooltip (empty where there is none)."""
    rates = ", ".join(f"{r:.3f}" for r in maps.stage_firing_rates)
    per = f" (k/{maps.spike_levels})" if maps.spike_levels > 1 and not maps.virtual else ""
    if decomposed:
        legend = "interactions as sum, shares and φ (hover 'interactions')"
    elif interactions_view == INTERACTION_VIEWS[1]:
        legend = (f"'{INTERACTION_VIEWS[1]}' is for SDSA (MedSpikeFormer), whose four maps add up to the "
                  f"values' spikes; here AA, AI, IA, II as recorded")
    elif maps.interaction_correlation > 0.7:
        legend = (f"AA, AI, IA, II alike (r ≥ {maps.interaction_correlation:.2f}): "
                  f"interactions '{INTERACTION_VIEWS[1]}' shows how they differ")
    else:
        legend = "AA, AI, IA, II: active or inactive Q with active or inactive K (hover Inspect)"
    if maps.virtual:
        time = (f"{maps.timesteps} virtual timesteps: an integer spike k/{maps.timesteps} is shown as k binary "
                f"spikes (move the {slider} slider)")
    elif maps.timesteps > 1:
        time = f"T = {maps.timesteps} timesteps: move the {slider} slider below the canvas"
    else:
        time = "T = 1: a single timestep"
    routed = f"answered by {maps.expert} (the gate's choice for this image)\n" if maps.expert else ""
    text = (
        f"{routed}{time}\nfiring rate per encoder stage{per}: {rates}\n"
        f"synaptic ops {report.sops / 1e9:.2f} G, analog MACs {report.analog_macs / 1e9:.2f} G\n"
        f"estimated energy {report.energy_pj / 1e9:.2f} mJ vs dense ANN {report.ann_energy_pj / 1e9:.2f} mJ "
        f"({report.energy_pj / max(report.ann_energy_pj, 1e-9):.0%})\n"
        f"{legend}\nmaps of one full-precision pass, without mirror TTA"
    )
    note = (f"\n(k/{maps.spike_levels}: a neuron fires up to {maps.spike_levels} spikes per timestep; its rate is "
            f"the mean of k/{maps.spike_levels})") if per else ""
    return text, note


class GridPause:
    """Turns napari's grid off before the first change that would lay it out again (a layer
    added, removed, moved, shown or hidden: napari lays the whole grid out after each), so
    that turning it back on lays it out once; when nothing of the kind changes, as when an
    inspection only puts new maps in the layers of the last one, the grid is never touched.
    Call it before each such change; ``was_on`` says whether the grid was on before."""

    def __init__(self, viewer: Viewer) -> None:
        self.settings = viewer_grid(viewer)
        self.was_on = bool(self.settings.enabled)

    def __call__(self) -> None:
        if self.settings.enabled:
            self.settings.enabled = False


class RatePlot(DockPlot):
    """Firing rate per (virtual) timestep for each part of the network, and per layer."""

    def __init__(self, style: dict[str, str] | None = None) -> None:
        # never wider than the dock; tall enough to read
        super().__init__(figsize=(3.0, 4.8), min_size=(120, 380), style=style)
        self.canvas.setToolTip("top: mean firing rate of each encoder stage, the decoder and the head at each "
                               "timestep; bottom: every spiking layer (rows, input to output) at each timestep")
        self.show({}, virtual=False)

    def show(self, layer_rates: dict[str, np.ndarray], virtual: bool, levels: int = 1) -> None:
        """Plot the rates; ``levels`` > 1: integer spikes per timestep, each rate the mean of k/levels."""
        self.redraw(lambda: self._draw(layer_rates, virtual, levels))

    def _draw(self, layer_rates: dict[str, np.ndarray], virtual: bool, levels: int) -> None:
        from matplotlib.ticker import MaxNLocator

        self.figure.clear()
        if not layer_rates:  # before the first inspection: say what will be here, not a blank area
            self.figure.text(0.5, 0.5, "firing rates per timestep\nappear here after Inspect", ha="center",
                             va="center", fontsize=8, alpha=0.6)
            return
        left, right = self.figure.subplots(2, 1, height_ratios=(1, 1))
        steps = max(len(r) for r in layer_rates.values())
        xlabel = "virtual timestep" if virtual else "timestep t"
        parts: dict[str, list[np.ndarray]] = {}
        for name, rates in layer_rates.items():
            parts.setdefault(stage_of(name), []).append(rates)
        for part, rows in parts.items():
            left.plot(range(steps), np.mean(rows, axis=0), "o-", ms=3, label=part)
        left.set_xlabel(xlabel, fontsize=8)
        left.set_ylabel("firing rate" if levels == 1 else f"firing rate (k/{levels})", fontsize=8)
        left.set_xticks(range(steps))
        left.tick_params(labelsize=7)
        # above both plots, where it hides no line and leaves the plots the dock's width
        self.figure.legend(fontsize=6, ncol=3, loc="outside upper center", handlelength=1.0, columnspacing=0.8,
                           frameon=False)
        left.set_title("firing rate per timestep", fontsize=8)
        grid = np.stack([r for r in layer_rates.values() if len(r) == steps])
        # rows numbered 1..n like the axis label says, on whole-number ticks
        image = right.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=max(float(grid.max()), 1e-6),
                             interpolation="nearest", extent=(-0.5, steps - 0.5, len(grid) + 0.5, 0.5))
        right.yaxis.set_major_locator(MaxNLocator(integer=True))
        right.set_xlabel(xlabel, fontsize=8)
        right.set_ylabel(f"layer 1-{len(grid)}", fontsize=8)
        right.set_title("per layer", fontsize=8)
        right.set_xticks(range(steps))
        right.tick_params(labelsize=7)
        # below the map, not beside it: beside, it took its width from both plots (one column)
        bar = self.figure.colorbar(image, ax=right, location="bottom", shrink=0.9, aspect=25, pad=0.02)
        bar.ax.tick_params(labelsize=6)
        bar.set_label("firing rate", fontsize=7)


@dataclass
class ShownInspection:
    """The inspection shown last: another interactions view or layout shows it again, no new run."""

    image_layer: Image
    maps: StageMaps
    report: EnergyReport
    frame: int | None  #: the stack's frame inspected; None for a 2D image
    channels: tuple[str, int]  #: how its channels were reduced to one map, and the channel picked (``"channel"``)


class InspectorWidget(DockContainer):
    """Show what the spiking network does on an image, one encoder stage at a time."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.session = session_of(napari_viewer)  # the model the viewer's docks share
        self.worker: Any = None
        self.image = image_box(self.viewer)
        self.model_note = compact_label(Label(value="", tooltip="the model chosen in the Segment dock"))
        self.stage = SpinBox(label="stage", min=0, max=3, value=0,
                             tooltip="encoder stage: 0 is at full resolution, each next one at half the previous")
        self.spikes = ComboBox(label="spikes", choices=self._spike_choices,
                               tooltip="which spikes of the stage's attention to show: the queries Q, keys K or "
                               "values V (only those the model records are offered)")
        self.reduce = ComboBox(label="channels", choices=list(REDUCTIONS), value="mean",
                               tooltip="mean over channels at each pixel (binary spikes: the fraction firing; "
                               "integer spikes: the mean of k/D); max: the largest channel; channel: one channel")
        self.channel = SpinBox(label="channel", min=0, max=511, value=0, visible=False)
        self.interactions = ComboBox(label="interactions", choices=list(INTERACTION_VIEWS),
                                     value=INTERACTION_VIEWS[0], tooltip=f"{INTERACTION_VIEWS[0]}: {INTERACTION_HELP}\n"
                                     f"{INTERACTION_VIEWS[1]}: {DECOMPOSED_HELP}")
        self.view = ComboBox(label="view", choices=list(VIEWS), value=VIEWS[0],
                             tooltip="side by side: the image, the spikes and the four interaction maps in a "
                             "grid with one camera; overlay: the spikes added onto the image, glowing where more "
                             "fire than at the median pixel (the interaction maps can be switched on in the layer list)")
        self.run_button = PushButton(text="Inspect", tooltip=INTERACTION_HELP)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.summary = compact_label(Label(value=""))
        self.export_button = PushButton(text="Export figures…", visible=False,
                                        tooltip="write this inspection's figures: .json all of them (energy per "
                                        "operation, firing rate per layer and timestep), .csv the firing rates per layer")
        self.plot = RatePlot(plot_theme(self.viewer))
        self.extend([self.image, self.model_note, self.stage, self.spikes, self.reduce, self.channel,
                     self.interactions, self.view, self.run_button, self.cancel_button, self.summary,
                     self.export_button])
        full_width(self.model_note, self.summary)
        self.inner.layout().addWidget(self.plot.canvas)
        self.reduce.changed.connect(lambda v: setattr(self.channel, "visible", v == "channel"))
        self.stage.changed.connect(self._limit_channel)
        self.view.changed.connect(self._apply_view)
        self.interactions.changed.connect(self._show_again)
        self._shown: ShownInspection | None = None  # the last result: another interactions view needs no new run
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.export_button.changed.connect(lambda *_: self.export_figures())
        self._figures: dict[str, Any] | None = None  # the last inspection's, for Export figures
        #: the running inspection's ticket: closing the dock takes it away, and the job shows nothing
        self._ticket: object | None = None
        call_when_closed(self, self._dock_closed)
        follow_layers(self, self.viewer, new_images=True)
        # a stack opened (or closed) after inspecting a 2D image: the maps' time axis is laid out
        # again beside its frames (it shared the stack's frame slider)
        self._across: list[tuple[int, float, float]] = []  # the other layers' frame axes the maps span
        # the axis label given to the maps' time axis: (label, axis counted from the last, the label it had);
        # forgotten once no maps are left (their axis went with them: a "t" left then is the user's)
        self._time_label: tuple[str, int, str] | None = None
        connect_until_closed(self, self.viewer.layers.events.removed, self._forget_time_label)
        connect_until_closed(self, self.viewer.layers.events.inserted, self._other_layers_changed)
        connect_until_closed(self, self.viewer.layers.events.removed, self._other_layers_changed)
        self._source: str | None = None  # the model the spike choice was made for
        self.session.subscribe(self._session_changed)
        call_when_closed(self, lambda: self.session.unsubscribe(self._session_changed))
        self._session_changed(self.session.source)
        # layers, not names: a layer renamed in the layer list stays what it was (a renamed image
        # was taken for a user's layer: hidden in the grid, covered by a map in the overlay)
        self._layers: list[Any] = []
        self._hidden_by_grid: set[Any] = set()  # the unique ids of the user's layers the grid view hid
        make_narrow(self)
        tab_with_sibling_docks(self)
        # back from another dock (the Correct and fine-tune one turns the grid off): this view again
        call_when_shown(self, lambda: self._apply_view(keep_camera=True))

    # --- the model --------------------------------------------------------------------------
    def _spike_choices(self, *_: Any) -> list[str]:
        model = self.session.model
        return list(model.recorded_spikes) if model is not None and model.spiking else ["q", "k", "v"]

    def _session_changed(self, source: str) -> None:
        """Show the current model. Another model resets the spike choice to ``v`` (the
        attention's output); for the same model the user's choice stays."""
        model = self.session.model
        chosen = self.spikes.value
        self.spikes.reset_choices()
        if chosen in self.spikes.choices and source == self._source:
            self.spikes.value = chosen
        elif "v" in self.spikes.choices:  # the values carry the attention's output: the default view
            self.spikes.value = "v"
        self._source = source
        self._limit_channel()
        if model is None:
            show_text(self.model_note, "model: the Segment dock's (not loaded yet)")
            return
        if not model.spiking:
            time = "an ANN: no spikes to show"
        elif model.spike_levels > 1 and model.timesteps > 1:
            time = f"T = {model.timesteps} timesteps, up to {model.spike_levels} spikes each"
        elif model.spike_levels > 1:
            time = f"integer spikes, shown as {model.spike_levels} virtual timesteps"
        else:
            time = f"T = {model.timesteps} timesteps"
        show_text(self.model_note, f"model: {elide(model_label(source), 40)} ({model.arch}, {time})")

    def _limit_channel(self, *_: Any) -> None:
        """The channel box offers the channels the chosen stage of the current model records."""
        model = self.session.model
        if model is None or not model.spiking or not 0 <= self.stage.value < len(model.attention_modules()):
            return
        channels = model.recorded_channels(self.stage.value)
        self.channel.max = channels - 1
        self.channel.tooltip = f"one of the {channels} channels of stage {self.stage.value}'s spikes"

    # --- running ----------------------------------------------------------------------------
    def run(self) -> Any:
        """Inspect the image chosen with the current model, in a worker; the worker, or None after
        saying what is missing (no image, a model that does not spike)."""
        layer = self.image.value
        # the pixels stay as the layer holds them (a lazy stack: read by the job, off the GUI thread)
        chosen = selected_image_and_model(layer, self.session, viewer=self.viewer, stacks=True)
        if chosen is None:
            return None
        data, model = chosen
        pixels_of = layer.data  # replaced while inspecting: the maps would lie over other pixels
        if not model.spiking:
            napari.utils.notifications.show_error(f"{model.arch} does not spike: choose a spiking model in Segment")
            return None
        self._session_changed(self.session.source)
        stage, spike, how, channel = self.stage.value, self.spikes.value, self.reduce.value, self.channel.value
        if spike not in model.recorded_spikes:
            spike = model.recorded_spikes[0]

        # a stack: the maps belong to the frame shown now, wherever the slider is when they come
        try:
            frame = shown_slice(layer, self.viewer) if layer.ndim == 3 else None
        except ValueError as err:
            napari.utils.notifications.show_error(str(err))
            return None
        self.run_button.enabled, self.cancel_button.enabled = False, True
        source = self.session.source  # the model inspected, whatever is chosen when the maps come

        value_range = shown_range(layer)  # not 8-bit: as napari shows it

        def job():  # a stack: the slice shown when Inspect was pressed
            pixels = np.asarray(data[frame] if frame is not None else data)
            return (yield from inspect_steps(model, pixels, stage, spike=spike, how=how, channel=channel,
                                             value_range=value_range))

        ticket = self._ticket = object()

        def show(result: tuple[Any, Any]) -> None:
            if ticket is not self._ticket:  # the dock was closed while it ran: no maps, no grid
                return
            maps, report = result
            if layer in self.viewer.layers and layer.data is not pixels_of:
                show_text(self.summary, f"'{elide(layer.name, 40)}' got other pixels while inspecting: nothing "
                          "shown (inspect it again)")
                return
            if layer in self.viewer.layers:
                from ..analysis.export import inspection_record

                self._figures = inspection_record(maps, report, image=layer.name, model=source, frame=frame)
                self.export_button.visible = True
            self._show(layer, maps, report, frame=frame, channels=(how, channel))

        self.worker = start_worker(job, "Spike inspector", on_return=show, on_finish=self._idle)
        return self.worker

    def _dock_closed(self) -> None:
        """Closing the dock stops its inspection (it added six map layers and turned napari's grid
        on after the dock had gone, with nothing left to turn it off)."""
        self._ticket = None
        if self.worker is not None:
            self.worker.quit()

    def cancel(self) -> None:
        """Stop the inspection at its next step; the maps shown stay, and the summary says whose."""
        if self.worker is None:
            return
        self.worker.quit()
        self.cancel_button.enabled = False  # (once: a second press would say it twice)
        if any(layer.metadata.get(MAP_TAG) for layer in self.viewer.layers):
            show_text(self.summary, "inspection cancelled: the maps and figures below are the earlier "
                      f"inspection's\n{self.summary.tooltip}")
        else:
            show_text(self.summary, "inspection cancelled: nothing shown")

    def export_figures(self, path: str | Path | None = None) -> Path | None:
        """Write the last inspection's figures (asks where, unless ``path`` is given): ``.json``
        all of them, ``.csv`` the firing rate of every spiking layer per timestep."""
        if self._figures is None:
            napari.utils.notifications.show_error("inspect an image first: there are no figures yet")
            return None
        from ..analysis.export import write_inspection

        if path is None:
            from qtpy.QtWidgets import QFileDialog

            stem = f"{self._figures['image']} spikes".replace("/", "_")
            path, chosen = QFileDialog.getSaveFileName(self.native, "Export the inspection's figures",
                                                       f"{stem}.json", "JSON, all figures (*.json);;CSV, firing rates (*.csv)")
            if not path:
                return None
            if not Path(path).suffix:
                path = f"{path}{'.csv' if 'csv' in chosen.lower() else '.json'}"
        try:
            written = write_inspection(path, self._figures)
        except (OSError, ValueError) as err:  # (WriteError included) a folder in the way, another extension
            napari.utils.notifications.show_error(f"figures not written: {err}")
            return None
        napari.utils.notifications.show_info(f"figures of the inspection written to {written}")
        return written

    def _idle(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False
        self.worker = None

    # --- showing ----------------------------------------------------------------------------
    def _put(self, name: str, slot: int, data: np.ndarray, pause: GridPause, **kwargs: Any) -> Any:
        """Show ``data`` in the map layer ``name``: the layer of that name, else the one that held
        the same place (``slot``: spikes, a map, the firing rate) in the last inspection, renamed,
        else a new one. Reusing layers keeps a new inspection fast: adding and removing layers
        re-lays out napari's canvas each time."""
        layer = self.viewer.layers[name] if name in self.viewer.layers else next(
            (la for la in self.viewer.layers if la.metadata.get(MAP_TAG) == slot + 1), None)
        if layer is not None and layer.data.ndim != data.ndim:  # e.g. another model's maps with another time axis
            pause()
            self.viewer.layers.remove(layer)
            layer = None
        if layer is None:  # tagged with its place, 1-based (the tag is also what marks a map layer)
            pause()
            return self.viewer.add_image(data, name=name, metadata={MAP_TAG: slot + 1}, **kwargs)
        layer.name, layer.data = name, data
        if kwargs.get("colormap", layer.colormap.name) != layer.colormap.name:
            layer.colormap = kwargs["colormap"]  # only when it changes: vispy rebuilds its shader
        for key in ("scale", "translate", "affine", "units", "contrast_limits", "visible"):  # each set costs a refresh
            if key in kwargs and not same_setting(getattr(layer, key), kwargs[key]):
                setattr(layer, key, kwargs[key])
        return layer

    def _other_layers_changed(self, event: Any = None) -> None:
        """After a layer that is not a map came or went (once napari has laid out its axes):
        the maps of a 2D image are shown again if the frame axes they must span changed."""
        from qtpy.QtCore import QTimer

        layer = getattr(event, "value", None)
        if self._shown is None or getattr(layer, "metadata", {}).get(MAP_TAG):
            return
        opened = event is not None and getattr(event, "type", "") == "inserted" and is_users_image(layer)

        def relayout() -> None:
            try:
                changed = self._shown.frame is None and self._axes_of_other_layers() != self._across
            except RuntimeError:  # the dock was closed meanwhile
                return
            if changed and any(la.metadata.get(MAP_TAG) for la in self.viewer.layers):
                self._show_again()
            if opened and layer in self.viewer.layers:
                self._out_of_grid_for(layer)

        QTimer.singleShot(0, relayout)

    def _out_of_grid_for(self, layer: Layer) -> None:
        """An image the user opened while the maps are laid out side by side: the grid turns off,
        the maps are hidden and the image is shown on top, as when another dock is raised (in
        the 2 x 3 grid it took a seventh place, drawn over a cell; hidden, it could not be seen
        at all). Inspect, or this dock raised again, lays the grid out again."""
        grid = viewer_grid(self.viewer)
        if not grid.enabled or not self._layers:
            return
        pause = GridPause(self.viewer)
        pause()
        for other in self.viewer.layers:
            other.name_overlay.visible = False
            if other.unique_id in self._hidden_by_grid:
                other.visible = True
            elif other.metadata.get(MAP_TAG):
                other.visible = False
        self._hidden_by_grid.clear()
        layer.visible = True
        self.viewer.layers.move(self.viewer.layers.index(layer), len(self.viewer.layers))
        self.viewer.reset_view()

    def _forget_time_label(self, *_: Any) -> None:
        if not any(layer.metadata.get(MAP_TAG) for layer in self.viewer.layers):
            self._time_label = None

    def _name_time_axis(self, axis: int) -> str:
        """Label napari's ``axis`` (the maps' time) "t", or "timestep" where the user's layers
        already have a "t" (a video's time); the axis named so before (it moves when a stack comes
        in) gets its own label back. Returns the label."""
        labels = list(self.viewer.dims.axis_labels)
        if self._time_label is not None:
            given, from_last, had = self._time_label
            if 0 <= len(labels) + from_last < len(labels) and labels[from_last] == given:
                labels[from_last] = had
            elif given in labels:  # moved: axes came in front of it
                labels[labels.index(given)] = had
        name = "timestep" if "t" in labels[:axis] + labels[axis + 1:] else "t"
        self._time_label = (name, axis - len(labels), labels[axis])
        labels[axis] = name
        self.viewer.dims.axis_labels = labels
        return name

    def _show_again(self, *_: Any) -> None:
        """The last inspection's maps in the interactions view chosen now (no new run)."""
        shown = self._shown
        if shown is not None and shown.image_layer in self.viewer.layers:
            step = self.viewer.dims.current_step  # the timestep shown stays
            self._show(shown.image_layer, shown.maps, shown.report, frame=shown.frame, channels=shown.channels)
            self.viewer.dims.current_step = step

    def _show(self, image_layer: Image, maps: StageMaps, report: EnergyReport, frame: int | None = None,
              channels: tuple[str, int] = ("mean", 0)) -> None:
        """Add (or update) the maps as layers over ``image_layer``. For a stack, ``frame`` is the
        frame inspected: the maps get an axis of their own for time, in front of the frame axis,
        and sit at that frame (the frame slider leaves them; the t slider moves through time)."""
        if image_layer not in self.viewer.layers:  # closed while it was being inspected
            show_text(self.summary, f"'{elide(image_layer.name, 40)}' was closed while inspecting: nothing shown")
            return
        self._shown = ShownInspection(image_layer, maps, report, frame, channels)
        pause = GridPause(self.viewer)
        across = self._axes_of_other_layers() if frame is None else []
        self._across = across
        place = MapPlacement(image_layer, maps, frame, across,
                             self._units_of_other_layers(len(across)) if across else ())

        tag = f"stage {maps.stage}"
        time_word = "virtual t" if maps.virtual else "t"
        # the channels shown, unless their mean (the default): "max", "channel 5"
        how = {"mean": "", "max": " max", "channel": f" channel {channels[1]}"}.get(channels[0], "")
        names = [f"spikes {maps.spike_name}{how} ({tag}, {time_word})"]
        data, where = place.on_image(maps.spikes)
        top = max(float(maps.spikes.max()), 1e-6)
        limits = {GRID_LIMITS: (0.0, top), OVERLAY_LIMITS: (min(float(np.median(maps.spikes)), top * 0.99), top)}
        grid = self.view.value == VIEWS[0]
        spikes = self._put(names[0], 0, data, pause, colormap="gray" if grid else OVERLAY_SPIKE_COLORMAP,
                           contrast_limits=limits[GRID_LIMITS if grid else OVERLAY_LIMITS], **where)
        spikes.metadata.update(limits)
        decomposed = self.interactions.value == INTERACTION_VIEWS[1] and maps.decomposed
        shown = maps.decomposed if decomposed else maps.interactions
        arrays = {k: (v[0] if v.shape[0] == 1 else v) for k, v in shown.items()}  # no time: 2D
        for slot, (name, array) in enumerate(arrays.items(), start=1):
            limits, signed = display_limits(name, array)
            names.append(f"{name} ({tag})")
            data, where = place.on_image(array)
            colormap = SIGNED_COLORMAP if signed else SHARE_COLORMAP if "share" in name else INTERACTION_COLORMAP
            self._put(names[-1], slot, data, pause, colormap=colormap, contrast_limits=limits, **where)
        data, where = place.on_image(maps.firing_rate)
        rate_name = f"{maps.spike_name} firing rate ({tag})"
        self._put(rate_name, 1 + len(arrays), data, pause, colormap="inferno", visible=False,
                  contrast_limits=(0.0, max(float(maps.firing_rate.max()), 1e-6)), **where)
        self._layers = [image_layer, *(self.viewer.layers[name] for name in names)]
        # one inspection's maps at a time: those of an earlier one (another stage, tensor, image,
        # model or interactions view) go; piled up, they slowed every later change of the view
        for layer in [layer for layer in self.viewer.layers if layer.metadata.get(MAP_TAG)]:
            if layer.name not in {*names, rate_name}:
                pause()
                self.viewer.layers.remove(layer)
        self.viewer.layers.selection.active = self.viewer.layers[names[0]]  # not the hidden firing-rate layer
        slider = "t"
        if maps.spikes.ndim == 3:
            time_axis = self.viewer.dims.ndim - self.viewer.layers[names[0]].ndim  # the maps' first axis
            slider = self._name_time_axis(time_axis)
            self.viewer.dims.set_current_step(time_axis, 0)
        self._apply_view(pause=pause)
        self.plot.show(maps.layer_rates, maps.virtual, maps.spike_levels if not maps.virtual else 1)
        text, note = inspection_summary(maps, report, self.interactions.value, decomposed, slider)
        show_text(self.summary, text)
        if note:  # the full words where there is room
            self.summary.tooltip += note

    def _units_of_other_layers(self, depth: int) -> tuple[str, ...]:
        """The units of the ``depth`` axes in front of the two image axes, as the layer other
        than the maps with the most axes has them (see :meth:`_axes_of_other_layers`)."""
        others = [layer for layer in self.viewer.layers if not layer.metadata.get(MAP_TAG)]
        deepest = max(others, key=lambda layer: layer.ndim, default=None)
        units = tuple(str(u) for u in getattr(deepest, "units", ()))
        return units[-2 - depth:-2] if len(units) >= 2 + depth else ("pixel",) * depth

    def _axes_of_other_layers(self) -> list[tuple[int, float, float]]:
        """``(frames, step, start)`` of each axis in front of the two image axes that layers other
        than the maps have (a stack's frames), as the viewer's sliders span them."""
        depth = max((layer.ndim for layer in self.viewer.layers if not layer.metadata.get(MAP_TAG)), default=2) - 2
        first = self.viewer.dims.ndim - 2 - depth
        return [(int(self.viewer.dims.nsteps[i]), float(self.viewer.dims.range[i].step),
                 float(self.viewer.dims.range[i].start)) for i in range(first, first + depth)]

    def _apply_view(self, *_: Any, keep_camera: bool = False, pause: GridPause | None = None) -> None:
        """Side by side: only the image and this stage's maps are shown, in napari's grid (one
        camera); overlay: the spikes over the image (the interaction maps can be switched on in
        the layer list). ``keep_camera``: leave the zoom as it is unless the grid turns on or off
        (when the dock is raised again). ``pause``: the caller's, when it changed layers too."""
        shown = [layer for layer in self._layers if layer in self.viewer.layers]
        if not shown:
            return
        ids = [layer.unique_id for layer in shown]  # (the same layer may come as two objects: same_layer)
        grid = self.view.value == VIEWS[0]

        def put(layer: Layer, key: str, value: Any) -> None:
            """Set only what changes: napari re-lays out every layer's overlays on each
            visibility or blending event, even one that changes nothing."""
            overlays = {"name_overlay": layer.name_overlay, "colorbar": getattr(layer, "colorbar", None)}
            target = overlays.get(key, layer)
            if target is None:  # (an image without a colour bar: an RGB one)
                return
            attr = "visible" if key in overlays else key
            now = getattr(target, attr)
            now = now.name if attr == "colormap" else tuple(now) if attr == "contrast_limits" else now
            if now != value:
                if key in ("visible", *overlays):
                    pause()
                if key == "colorbar" and value:  # small enough to leave the map uncovered in its cell
                    target.size, target.font_size, target.position = COLORBAR_SIZE, 8, "bottom_right"
                setattr(target, attr, value)

        pause = pause or GridPause(self.viewer)
        settings = viewer_grid(self.viewer)
        for layer in self.viewer.layers:
            if layer.unique_id in ids:
                put(layer, "name_overlay", grid)  # each grid cell says what it shows
                # and, beside each map, what its colours stand for (each map has its own range)
                put(layer, "colorbar", grid and layer.unique_id != ids[0])
                put(layer, "visible", grid or layer.unique_id in ids[:2])  # overlay: the image and the spikes
                spikes = GRID_LIMITS in layer.metadata  # (the spike layer may have been deleted)
                glow = not grid and spikes  # overlaid spikes add light where they fire
                put(layer, "blending", "translucent_no_depth" if layer.unique_id == ids[0] else
                    "additive" if glow else "translucent")
                put(layer, "opacity", 1.0 if grid or layer.unique_id == ids[0] or glow else 0.6)
                if spikes:  # grey in the grid; over the image, pixels at or below the median leave it as it is
                    put(layer, "colormap", OVERLAY_SPIKE_COLORMAP if glow else "gray")
                    put(layer, "contrast_limits", layer.metadata[OVERLAY_LIMITS if glow else GRID_LIMITS])
            elif layer.metadata.get(MAP_TAG):  # the firing-rate map: switched on in the layer list
                put(layer, "visible", False)
            elif grid and layer.visible:  # the grid shows only these; the user's layers come back after
                pause()
                layer.visible = False
                self._hidden_by_grid.add(layer.unique_id)
        if not grid:
            back = [layer for layer in self.viewer.layers
                    if layer.unique_id in self._hidden_by_grid and layer.unique_id not in ids]
            for layer in self.viewer.layers:
                put(layer, "name_overlay", False)
                if layer.metadata.get(MAP_TAG):  # (a colour bar of the user's own stays)
                    put(layer, "colorbar", False)
            for layer in back:  # shown again, and on top: the grid put the image above them
                pause()
                layer.visible = True
                self.viewer.layers.move(self.viewer.layers.index(layer), len(self.viewer.layers))
            self._hidden_by_grid.clear()
        if grid:  # the grid lays out layers from the top of the list: put these first, in order
            top = len(self.viewer.layers) - len(shown)
            if [layer.unique_id for layer in self.viewer.layers][top:] != ids:
                pause()
                for layer in shown:
                    self.viewer.layers.move(self.viewer.layers.index(layer), len(self.viewer.layers))
            shape = (2, 3) if len(shown) > 4 else (-1, -1)
            if tuple(settings.shape) != shape:
                pause()
                settings.shape = shape
        settings.enabled = grid  # (napari lays the grid out only if this changes it)
        if pause.was_on != grid or not keep_camera:
            self.viewer.reset_view()
