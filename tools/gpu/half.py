"""Copy a checkpoint with its weights stored as float16 (batch-norm statistics as float32), metadata kept."""
import json, sys
from safetensors import safe_open
from safetensors.torch import save_file
src, dst = sys.argv[1], sys.argv[2]
with safe_open(src, "pt") as f:
    header = dict(f.metadata())
    tensors = {k: f.get_tensor(k) for k in f.keys()}
key = next(iter(header))
meta = json.loads(header[key]); meta["storage_dtype"] = "float16"; header[key] = json.dumps(meta)
keep = lambda k, v: k.endswith(("running_mean", "running_var")) or not v.is_floating_point()
save_file({k: (v if keep(k, v) else v.half()).contiguous() for k, v in tensors.items()}, dst, metadata=header)
print(dst, meta.get("metrics"))
