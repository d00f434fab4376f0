"""The end of a worker process started by detectron2.engine.launch."""
from contextlib import contextmanager

import torch.distributed as dist
from detectron2.utils import comm


@contextmanager
def leave_process_group_on_exit():
    """Run the body; when it returns, wait for every process and destroy the process groups.

    detectron2.engine.launch never destroys the process groups it creates. A GLOO worker that then
    exits can still have gloo threads alive during interpreter shutdown and die with "terminate
    called without an active exception" (SIGABRT) after its work is done, failing the whole
    launch at random. After a normal return every rank meets at a barrier, then the groups (WORLD
    and detectron2's local group) are destroyed while the interpreter is alive. On an exception
    nothing waits (the other ranks would block at the barrier); launch stops them. Without a process
    group (one process) it does nothing.
    """
    yield
    if dist.is_available() and dist.is_initialized():
        comm.synchronize()
        dist.destroy_process_group()
