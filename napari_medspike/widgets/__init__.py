"""Dock widgets: thin magicgui/Qt front-ends over the core (no logic a test would want to call)."""

from .finetune import FinetuneWidget
from .inspector import InspectorWidget
from .segment import SegmentWidget

__all__ = ["FinetuneWidget", "InspectorWidget", "SegmentWidget"]
