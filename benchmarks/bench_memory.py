"""The plan's memory estimate (trainfail.training.sizes) against the memory training really takes, on the CPU.

    python benchmarks/bench_memory.py

Each case runs in a fresh process: a model from models.build, Adam, two training steps on a
random batch; the peak resident memory those steps add (ru_maxrss, the allocator's slack
included) is set beside the estimate of the same network (parameters x 16 bytes, the values each
layer keeps x the batch, two layers of gradients in flight). The data set is left out of both.
Measured on this project's 2-core VM (torch 2.13 CPU, one thread):

    cnn [32, 64, 128] (3, 32, 32) batch 1024:             measured  471 MiB, estimate  766 MiB (1.63x)
    cnn [32, 64, 128] BN (3, 32, 32) batch 512:           measured  412 MiB, estimate  496 MiB (1.20x)
    mlp [2048, 2048, 2048] (1, 28, 28) batch 4096:        measured  251 MiB, estimate  421 MiB (1.68x)
    mlp [512] x 5 BN (1, 28, 28) batch 6000:              measured  270 MiB, estimate  252 MiB (0.93x)

(two runs differed by up to 30 MiB), so the estimate is at or above what training takes, within
a tenth where it is not (batch norm's temporaries at a large batch): a check against gross mistakes (a width of 100,000 is 10^4 times over), not a sizing. A GPU's
caching allocator and cuDNN workspaces add their own share: the default budget
(limits.job_memory_gib, 64) leaves 16 GB of an 80 GB GPU for them.
"""

from __future__ import annotations

import json
import subprocess
import sys

CASES = [
    ({"arch": "cnn", "channels": [32, 64, 128]}, (3, 32, 32), 1024),
    ({"arch": "cnn", "channels": [32, 64, 128], "norm": "batch"}, (3, 32, 32), 512),
    ({"arch": "mlp", "hidden": [2048, 2048, 2048]}, (1, 28, 28), 4096),
    ({"arch": "mlp", "hidden": [512] * 5, "norm": "batch"}, (1, 28, 28), 6000),
]

ONE = """
import json, resource, sys, torch
from trainfail.training import models
spec, shape, batch = json.loads(sys.argv[1]), tuple(json.loads(sys.argv[2])), int(sys.argv[3])
torch.set_num_threads(1)
model = models.build(spec, shape, 10)
opt = torch.optim.Adam(model.parameters(), 1e-3)
x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for _ in range(2):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def main() -> None:
    from trainfail.training import sizes

    for spec, shape, batch in CASES:
        out = subprocess.run([sys.executable, "-c", ONE, json.dumps(spec), json.dumps(shape), str(batch)],
                             check=True, capture_output=True, text=True).stdout
        measured = int(out.split()[-1])
        estimate = sizes.training_bytes(*sizes.network(spec, shape, 10), batch)
        print(f"{spec} {shape} batch {batch}: measured {measured / 2**20:.0f} MiB, "
              f"estimate {estimate / 2**20:.0f} MiB ({estimate / measured:.2f}x)")


if __name__ == "__main__":
    main()
