"""``python -m napari_medspike``: napari with the three widgets docked on a bundled sample."""

from __future__ import annotations


def main() -> None:
    from .runtime import reexec_with_huge_pages

    reexec_with_huge_pages()  # huge-page malloc for training from the GUI (napari_medspike.runtime)
    import napari

    from .demo import open_plugin

    viewer = napari.Viewer(title="napari-medspike")
    open_plugin(viewer, "kvasir")
    napari.run()


if __name__ == "__main__":
    main()
