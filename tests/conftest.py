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


import logging  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _drop_log_handlers_of_closed_streams():
    """train_net.main run in-process sets up Detectron2's console handlers on the stream pytest
    captures for that test; once pytest closes it, a later log record would print a "Logging error"
    traceback into another test's output. Remove such handlers after each test."""
    yield
    for name in ("detectron2", "fvcore", "detkit"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            stream = getattr(handler, "stream", None)
            if stream is not None and getattr(stream, "closed", False):
                logger.removeHandler(handler)


@pytest.fixture
def one_thread():
    """One intra-op thread for a test (``pytestmark = pytest.mark.usefixtures("one_thread")``): on a
    shared, busy CPU two spin-waiting threads made the end-to-end runs ~6x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
