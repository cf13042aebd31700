"""collex on CUDA arrays (CuPy, or anything with ``__cuda_array_interface__``):
the collectives of a Communicator take them directly, and this subpackage is
how. ``arguments`` checks them (and imports the optional CUDA module,
collex._cuda, on first use); ``staging`` runs every collective through pinned
host memory, or all-reduces between ranks of one node on the GPU; ``ipc``
holds the device buffers peers map through CUDA IPC; ``mirror`` is the host
copy GradientReducer reduces for CUDA gradients."""

from .arguments import is_device_array

__all__ = ["is_device_array"]
