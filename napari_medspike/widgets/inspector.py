"""Spike inspector dock widget: spike maps per timestep, firing rate, the four interactions, energy."""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton, SpinBox, create_widget

from ..analysis.energy import estimate_energy
from ..analysis.maps import REDUCTIONS, inspect_stage, model_input
from ..inference.predictor import Progress
from ._common import follow_layers, selected_image_and_model, start_worker

INTERACTION_COLORMAPS = {"AA": "viridis", "AI": "plasma", "IA": "cividis", "II": "twilight"}


class InspectorWidget(Container):
    """Show what the spiking network does on an image, one encoder stage at a time."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.worker: Any = None
        self.image = create_widget(annotation=napari.layers.Image, label="image")
        self.stage = SpinBox(label="stage", min=0, max=3, value=0, tooltip="encoder stage (0: full resolution)")
        self.spikes = ComboBox(label="spikes", choices=["v", "q", "k"], value="v")
        self.reduce = ComboBox(label="channels", choices=list(REDUCTIONS), value="mean")
        self.channel = SpinBox(label="channel", min=0, max=511, value=0, visible=False)
        self.run_button = PushButton(text="Inspect")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.summary = Label(value="")
        self.extend([self.image, self.stage, self.spikes, self.reduce, self.channel, self.run_button,
                     self.cancel_button, self.summary])
        self.reduce.changed.connect(lambda v: setattr(self.channel, "visible", v == "channel"))
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(lambda: self.worker is not None and self.worker.quit())
        follow_layers(self, self.viewer)

    def run(self) -> Any:
        layer = self.image.value
        chosen = selected_image_and_model(layer)
        if chosen is None:
            return None
        data, model = chosen
        stage, spike, how, channel = self.stage.value, self.spikes.value, self.reduce.value, self.channel.value
        if spike not in ("q", "k") and model.arch == "medqkformer":
            spike = "q"

        def job():
            yield Progress(0, 2, "forward with recording")
            maps = inspect_stage(model, data, stage, spike=spike, how=how, channel=channel)
            yield Progress(1, 2, "energy")
            size = int((getattr(model, "checkpoint_info", None) or {}).get("input_size", 256))
            report = estimate_energy(model, model_input(data, size))
            yield Progress(2, 2, "done")
            return maps, report

        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.worker = start_worker(job, "Spike inspector", on_return=lambda r: self._show(layer, *r),
                                   on_finish=self._idle)
        return self.worker

    def _idle(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False
        self.worker = None

    def _put(self, name: str, data: np.ndarray, **kwargs: Any) -> None:
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = data
            layer.scale, layer.translate = kwargs["scale"], kwargs["translate"]
        else:
            self.viewer.add_image(data, name=name, **kwargs)

    def _show(self, image_layer: Any, maps: Any, report: Any) -> None:
        sy, sx = (maps.scale[i] * image_layer.scale[-2 + i] for i in range(2))
        ty, tx = (maps.translate[i] * image_layer.scale[-2 + i] + image_layer.translate[-2 + i] for i in range(2))
        tag = f"stage {maps.stage}"
        common_t = {"scale": (1.0, sy, sx), "translate": (0.0, ty, tx), "blending": "additive"}
        self._put(f"spikes {maps.spike_name} ({tag})", maps.spikes, colormap="gray", opacity=0.8,
                  contrast_limits=(0.0, max(float(maps.spikes.max()), 1e-6)), **common_t)
        self._put(f"firing rate ({tag})", maps.firing_rate, colormap="inferno", opacity=0.7,
                  contrast_limits=(0.0, max(float(maps.firing_rate.max()), 1e-6)),
                  scale=(sy, sx), translate=(ty, tx), blending="additive", visible=False)
        for name, array in maps.interactions.items():
            lo, hi = float(array.min()), float(array.max())
            self._put(f"{name} ({tag})", array, colormap=INTERACTION_COLORMAPS[name], opacity=0.7,
                      contrast_limits=(lo, hi if hi > lo else lo + 1e-6), visible=name == "AA", **common_t)
        rates = ", ".join(f"{r:.3f}" for r in maps.stage_firing_rates)
        self.summary.value = (
            f"T = {maps.timesteps} (slider steps through time)\nfiring rate per stage: {rates}\n"
            f"synaptic ops {report.sops / 1e9:.2f} G, analog MACs {report.analog_macs / 1e9:.2f} G\n"
            f"energy {report.energy_pj / 1e9:.2f} mJ vs dense ANN {report.ann_energy_pj / 1e9:.2f} mJ "
            f"({report.energy_pj / max(report.ann_energy_pj, 1e-9):.0%})"
        )
