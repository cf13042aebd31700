"""The data-parallel training layer: bucketed, optionally compressed gradient
all-reduce (GradientReducer), parameter broadcast and an optimizer wrapper.

The work happens in the C++ core (csrc/collex/fusion/); this module checks the
arguments and keeps the gradient arrays alive while the core refers to them.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _core, _runtime
from ._arrays import Arg, where
from ._comm import Communicator
from ._digest import digest
from ._dtypes import FLOATING, SUPPORTED
from .cuda.arguments import DeviceArg, cuda_module, is_device_array
from .cuda.mirror import HostMirror
from .cuda.reducer import DeviceReducer

COMPRESSIONS = ("none", "fp16", "bf16")
MIB = 1 << 20


def _communicator(comm: Communicator | None) -> Communicator:
    return _runtime.world() if comm is None else comm


class GradientReducer:
    """Averages a model's gradients over the ranks, in place, a bucket at a time.

    ``grads`` are the gradient arrays in registration order (the order the model
    defines its parameters); every rank passes arrays of the same shapes and
    dtypes (construction compares them, and the settings, across the ranks:
    CollectiveMismatch on every rank where they differ). They are grouped into
    buckets of at most ``bucket_mb`` MiB in reverse order, the order a backward
    pass finishes them (the first bucket is kept to ``first_bucket_mb`` so that
    communication starts early), one dtype per bucket, never splitting a gradient.

    Each step, call ``ready(i)`` as soon as gradient ``i`` is final: a bucket's
    all-reduce starts in the background once all its gradients are ready, while
    the caller goes on computing. ``wait()`` returns when every gradient holds the
    average over the ranks; ``reduce()`` marks every remaining gradient ready and
    waits. The arrays must not be read or written between ``ready(i)`` and
    ``wait()``.

    ``compression="fp16"`` or ``"bf16"`` sends float32 gradients at half the
    bytes: packing converts them (fp16 scaled by a power of two, agreed by the
    ranks, so that the sum cannot overflow), every reduction step accumulates in
    float32, and unpacking converts back. With ``error_feedback`` each gradient's
    rounding residual is kept and added back at the next step, so rounding errors
    do not accumulate over training. Buckets of other dtypes travel as they are.

    Uncompressed buckets are not packed when the ranks share a node: the direct
    algorithm reads each gradient where it lies and writes the average back in
    place. Peers read what they cannot map from copies that the all-reduce makes
    in memory every rank maps: gradients under 1 MiB that lie mostly on private
    pages (below; ``bucket_info()`` lists them), and the first and last pages of
    larger ones. Across nodes they go through a fusion buffer, except when a bucket's
    gradients fill one span of memory on every rank (views of one flat array,
    e.g. from ``collex.zeros``), which is reduced where it lies.

    Without compression, construction moves gradients of 256 KiB or more (their
    whole pages) onto shared pages the node's ranks map, so that peers read and
    write them in place (README, "Shared pages for ordinary arrays";
    ``COLLEX_SHARE_PAGES=0`` turns it off). The smaller ones are copied as said
    above. Peers read the rest (larger gradients that did not move) through the
    kernel's cross-memory attach, which pins and copies memory a page at a
    time; NumPy puts arrays under 4 MiB on 4 KiB pages, where that took twice
    as long as from huge pages here. With
    ``huge_pages`` (the default) construction therefore backs the huge-page
    regions (2 MiB on x86-64) those gradients lie in with transparent huge pages
    where the kernel allows it (private anonymous memory, Linux 6.1 or later,
    the system's policy not "never"): addresses and contents stay as they are;
    ``huge_page_bytes`` says how much lies on them.
    ``huge_pages=False`` leaves the memory alone.

    CUDA gradients (CuPy arrays and the like, all of them on a device) are
    mirrored in one pinned host buffer: ``ready(i)`` copies gradient ``i`` down
    (after the work queued on its stream) before its bucket may launch, and
    ``wait()`` queues every average's copy back up on the gradient's stream.
    Where the communicator runs the stream-ordered CUDA kernels instead
    (``COLLEX_CUDA_IPC=lanes``) they never leave the GPU on one node
    (cuda/reducer.py: buckets averaged on a stream of the reducer's own,
    compression and error feedback as CUDA kernels; ``wait()`` orders the
    gradients' streams after it and returns at once); on several nodes only
    each rank's share of a bucket goes down, for the all-reduce between nodes
    (cuda/across_nodes.py). Not yet run on a GPU.
    """

    def __init__(
        self,
        grads: Sequence[Any],
        bucket_mb: float = 25,
        compression: str | None = None,
        error_feedback: bool = True,
        *,
        first_bucket_mb: float = 1,
        comm: Communicator | None = None,
        huge_pages: bool = True,
    ):
        comm = _communicator(comm)
        op = "GradientReducer"
        here = where(op, comm.rank)
        if isinstance(grads, np.ndarray) or not isinstance(grads, Sequence):
            raise TypeError(f"{here}: grads: expected a list of arrays, got {type(grads).__name__}")
        for name, value in (("bucket_mb", bucket_mb), ("first_bucket_mb", first_bucket_mb)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{here}: {name}={value!r}: expected a positive number of MiB")
        comp = "none" if compression is None else compression
        if comp not in COMPRESSIONS:
            raise ValueError(f"{here}: compression={compression!r}: expected None, 'fp16' or 'bf16'")
        on_device = [is_device_array(g) for g in grads]
        self._mirror = None
        self._device: DeviceReducer | None = None
        self._comm = comm
        cap = int(bucket_mb * MIB)
        first_cap = min(cap, int(first_bucket_mb * MIB))
        if any(on_device):
            if not all(on_device):
                host = on_device.index(False)
                raise TypeError(
                    f"{here}: grads: a mix of CUDA and host arrays (grads[{host}] is on the host); "
                    "pass all of one kind"
                )
            lanes = self._lanes_for(grads, op)
            if lanes is not None:
                self._grads = list(grads)
                self._device = DeviceReducer(
                    comm, grads, lanes, cuda_module(op, comm.rank), cap, first_cap, comp, bool(error_feedback)
                )
                self.compression = None if comp == "none" else comp
                return
            self._mirror = HostMirror(grads, op, comm.rank)
            grads = self._mirror.host
        self._marked: set[int] = set()  # gradients already copied down this step
        specs = []
        arrays = []
        shapes = []  # compared across the ranks with the counts: (10, 100) is not (100, 10)
        for i, g in enumerate(grads):
            a = Arg(g, f"grads[{i}]", op, comm.rank, writable=True)
            if a.code not in FLOATING:
                raise TypeError(
                    f"{here}: grads[{i}]: gradients must be floating point, got {SUPPORTED[a.code]}"
                )
            specs.append((a.address, a.count, a.code))
            arrays.append(a.array)
            shapes.append(tuple(a.array.shape))
        self._grads = arrays  # the core refers to their memory
        if comp == "none":
            comm._c.share_pages_of(arrays)  # peers read them in place (README, "Shared pages")
        self._c = _core.GradientReducer(
            comm._c,
            specs,
            cap,
            first_cap,
            comp,
            bool(error_feedback),
            bool(huge_pages),
            digest(shapes),
        )
        self.compression = None if comp == "none" else comp

    def _lanes_for(self, grads: Sequence[Any], op: str) -> Any:
        """The communicator's stream-ordered kernels for the gradients' device, or
        None (collective: every rank asks at the same point)."""
        args = (DeviceArg(g, f"grads[{i}]", op, self._comm.rank, writable=True) for i, g in enumerate(grads))
        first = next((a for a in args if a.nbytes), None)
        return None if first is None else self._comm._device.lane_peers(first, op)

    def _index(self, i: Any, method: str) -> int:
        here = where(f"GradientReducer.{method}", self._comm.rank)
        try:
            k = operator.index(i)
        except TypeError:
            raise TypeError(f"{here}: expected an int index, got {type(i).__name__}") from None
        if not 0 <= k < len(self._grads):
            raise ValueError(f"{here}: gradient index {i} out of range [0, {len(self._grads)})")
        return k

    def ready(self, i: int) -> None:
        """Gradient ``i`` is final for this step; its bucket may launch."""
        k = self._index(i, "ready")
        if self._device is not None:
            self._device.ready(k)
            return
        if self._mirror is not None and k not in self._marked:
            # (a second ready(k) is left to the core's error, without copying
            # over a host gradient whose bucket may be in flight)
            self._mirror.down(k)
            self._marked.add(k)
        self._c.ready(k)

    def wait(self) -> None:
        """Waits until every gradient holds the average over the ranks; ends the step."""
        if self._device is not None:
            self._device.wait()
            return
        self._c.wait()
        self._copy_up()

    def reduce(self) -> None:
        """Marks every gradient not yet ready as ready, then waits."""
        if self._device is not None:
            self._device.reduce()
            return
        if self._mirror is not None:
            for k in range(len(self._grads)):
                if k not in self._marked:
                    self._mirror.down(k)
        self._c.reduce()
        self._copy_up()

    def _copy_up(self) -> None:
        if self._mirror is not None:
            self._mirror.up_all()
            self._marked.clear()

    @property
    def huge_page_bytes(self) -> int:
        """Bytes of this rank's gradients that peers read in place and that lie on huge
        pages after construction, whether it moved them there or NumPy had (0 when
        ``huge_pages=False``, on one rank, across nodes or where the kernel refused;
        always 0 for CUDA gradients averaged on the GPU)."""
        return 0 if self._device is not None else self._c.huge_page_bytes

    @property
    def buckets(self) -> list[list[int]]:
        """Gradient indices per bucket, in launch order."""
        return [members for _, members, _ in self._described()]

    def _described(self) -> list:
        return self._device.buckets() if self._device is not None else self._c.buckets()

    def bucket_info(self) -> list[dict]:
        """Per bucket: its gradients, their offsets in the bucket, dtype, wire dtype, and
        path: "span" (the gradients fill one span of memory and are reduced where
        they lie), "segments" (separate arrays read and written where they lie, on
        one node) or "packed" (through a fusion buffer); and, of a "segments"
        bucket, the gradients that peers read from copies in its fusion buffer
        ("packed": those under 1 MiB that they cannot read in place)."""
        info = []
        for b, (code, members, offsets) in enumerate(self._described()):
            on_gpu = self._device is not None
            info.append(
                {
                    "gradients": members,
                    "offsets": offsets,
                    "dtype": SUPPORTED[code],
                    "wire_dtype": self._device.wire_dtype(b) if on_gpu else SUPPORTED[self._c.wire_dtype(b)],
                    "path": self._device.path(b) if on_gpu else self._c.path(b),
                    "packed": [] if on_gpu else self._c.packed(b),
                }
            )
        return info

    def residual(self, i: int) -> np.ndarray | None:
        """A copy of gradient ``i``'s error-feedback residual: what compression's rounding
        took from it, to be added back at the next step (None when not kept)."""
        k = self._index(i, "residual")
        if self._device is not None:
            return self._device.residual(k)
        address = self._c.residual_address(k)
        if address == 0:
            return None
        g = self._grads[k]
        view = np.ctypeslib.as_array((np.ctypeslib.ctypes.c_float * g.size).from_address(address))
        return view.reshape(g.shape).copy()  # a view would outlive the reducer's memory


def broadcast_parameters(params: Sequence[Any], root: int = 0, comm: Communicator | None = None) -> None:
    """Overwrites every rank's ``params`` (a list of arrays) with the root's, so that
    data-parallel replicas start identical. Broadcasts are issued together and waited
    for at the end."""
    comm = _communicator(comm)
    if isinstance(params, np.ndarray) or not isinstance(params, Sequence):
        raise TypeError(
            f"{where('broadcast_parameters', comm.rank)}: params: expected a list of arrays, "
            f"got {type(params).__name__}"
        )
    works = [comm.broadcast(p, root=root, async_op=True) for p in params]
    for w in works:
        w.wait()


class DistributedOptimizer:
    """Wraps an optimizer so that each ``step`` first averages the gradients over the
    ranks. ``optimizer`` is any object with a ``step(params, grads)`` method; ``grads``
    are the gradient arrays it will be given, reduced by a GradientReducer (the
    keyword arguments go to it).

    ``opt.ready(i)`` may be called during the backward pass to start a bucket early;
    ``opt.step(params)`` then waits for what is in flight, reduces the rest and calls
    ``optimizer.step(params, grads)``.
    """

    def __init__(self, optimizer: Any, grads: Sequence[Any], **reducer_options: Any):
        if not callable(getattr(optimizer, "step", None)):
            raise TypeError(
                "collex.DistributedOptimizer: optimizer: expected an object with a step(params, grads) "
                f"method, got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        self.grads = list(grads)
        self.reducer = GradientReducer(self.grads, **reducer_options)

    def ready(self, i: int) -> None:
        self.reducer.ready(i)

    def step(self, params: Sequence[Any], grads: Sequence[Any] | None = None) -> Any:
        same = grads is None or (
            len(grads) == len(self.grads) and all(a is b for a, b in zip(grads, self.grads))
        )
        if not same:
            raise ValueError(
                "collex.DistributedOptimizer.step: grads: pass the arrays given at construction (or none)"
            )
        self.reducer.reduce()
        return self.optimizer.step(params, self.grads)

    def __getattr__(self, name: str) -> Any:
        # Everything else (learning rate, state) is the wrapped optimizer's.
        return getattr(self.optimizer, name)
