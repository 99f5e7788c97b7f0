"""``python -m napari_medspike``: napari with the three widgets docked on a bundled sample."""

from __future__ import annotations


def main() -> None:
    import napari

    from .demo import open_plugin

    viewer = napari.Viewer(title="napari-medspike")
    open_plugin(viewer, "kvasir")
    napari.run()


if __name__ == "__main__":
    main()
