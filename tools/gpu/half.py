"""Copy a checkpoint with its weights stored as float16 (half the size; batch-norm statistics
stay float32), its metadata kept: python tools/gpu/half.py SOURCE DESTINATION"""

import sys

from napari_medspike.engine.checkpoint import load_model, save_checkpoint

if __name__ == "__main__":
    source, destination = sys.argv[1], sys.argv[2]
    model = load_model(source)
    save_checkpoint(model, destination, half=True, **model.info.record())
