import os

# Tests share 2 cores between MuJoCo's threads and torch; keep torch from
# oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
