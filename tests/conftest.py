import os
import sys
import tempfile

# Generated datasets go to a per-session folder, set before detkit registers them on import.
os.environ.setdefault("DETKIT_CACHE", tempfile.mkdtemp(prefix="detkit-test-cache-"))
os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)  # for `import train_net`

import torch  # noqa: E402

torch.set_num_threads(2)
