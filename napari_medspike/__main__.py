"""``python -m napari_medspike``: open napari with the plugin and its sample image."""

from __future__ import annotations


def main() -> None:
    import napari

    viewer = napari.Viewer(title="napari-medspike")
    viewer.open_sample("napari-medspike", "synthetic")
    napari.run()


if __name__ == "__main__":
    main()
