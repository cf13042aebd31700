"""collex on CUDA arrays (CuPy, or anything with ``__cuda_array_interface__``):
the collectives of a Communicator take them directly, and this subpackage is
how. ``arguments`` checks them (and imports the optional CUDA module,
collex._cuda, on first use); ``staging`` runs every collective through pinned
host memory, or all-reduces between ranks of one node on the GPU; ``ipc``
holds the device buffers peers map through CUDA IPC; ``lanes`` the
stream-ordered collectives (COLLEX_CUDA_IPC=lanes), ``registered`` the users'
arrays they read in place, ``across_nodes`` their all-reduce on several nodes;
``reducer`` GradientReducer
on the GPU where those run, ``mirror`` the host copy it reduces otherwise;
``allocate`` lays gradients out back to back (``zeros_like_each``). The sizes
where the all-reduce changes its way are exported for the bench, which labels
its rows with them."""

from .allocate import zeros_like_each
from .arguments import is_device_array
from .ipc import IPC_MIN_BYTES
from .lanes import ONE_SHOT_MAX_BYTES, mps_running

__all__ = ["IPC_MIN_BYTES", "ONE_SHOT_MAX_BYTES", "is_device_array", "mps_running", "zeros_like_each"]
