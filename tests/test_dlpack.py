"""Arrays by DLPack: what the core reads from a capsule (csrc/bindings/dlpack.cpp)
against NumPy's own arrays, how collex/_dlpack.py sorts producers into host and
CUDA arrays, and host ones through the collectives on MPI ranks."""

import numpy as np
import pytest
from collex import _core, _dlpack
from collex._arrays import as_ndarray
from collex.cuda.arguments import is_device_array
from conftest import run_mpi


class Producer:
    """Speaks DLPack only; `device` overrides what it says its device is."""

    def __init__(self, a, device=None):
        self._a, self._device = a, device

    def __dlpack__(self, **kwargs):
        kwargs.pop("stream", None)  # NumPy takes no stream; a CUDA producer would
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._device or self._a.__dlpack_device__()


@pytest.mark.parametrize("versioned", [False, True])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int8, np.uint8, np.int32, np.int64])
def test_the_capsule_describes_the_array(dtype, versioned):
    base = np.arange(60, dtype=dtype).reshape(6, 10)
    for a in (base, base[2:], base[:, ::2]):
        capsule = a.__dlpack__(max_version=(1, 0)) if versioned else a.__dlpack__()
        address, device_type, device, shape, strides, typestr, read_only = _core._dlpack_describe(capsule)
        assert address == a.__array_interface__["data"][0]
        assert (device_type, device, shape) == (1, 0, a.shape)
        assert typestr == np.dtype(dtype).str
        assert strides is None or strides == a.strides
        assert read_only is False


def test_read_only_comes_through_the_versioned_capsule():
    a = np.zeros(4, np.float32)
    a.flags.writeable = False
    assert _core._dlpack_describe(a.__dlpack__(max_version=(1, 0)))[-1] is True


def test_a_consumed_capsule_is_refused():
    capsule = np.zeros(4, np.float32).__dlpack__()

    class Once:
        def __dlpack__(self, **kwargs):
            return capsule

        def __dlpack_device__(self):
            return (1, 0)

    np.from_dlpack(Once())  # NumPy consumes it: renamed "used_dltensor", its tensor NumPy's now
    with pytest.raises(TypeError, match='expected a "dltensor" capsule, got "used_dltensor"'):
        _core._dlpack_describe(capsule)


def test_host_producers_become_numpy_views_and_cuda_ones_device_arrays():
    a = np.arange(5, dtype=np.float32)
    host = Producer(a)
    assert _dlpack.on_host(host) and not is_device_array(host)
    v = as_ndarray(host, "x", "allreduce", 0)
    assert np.shares_memory(v, a) and v.flags.writeable
    cuda = Producer(a, device=(2, 0))
    assert _dlpack.on_device(cuda) and is_device_array(cuda)
    with pytest.raises(TypeError, match="got a CUDA array"):
        as_ndarray(cuda, "x", "allreduce", 0)
    # The view a CUDA producer's array is read through (here over host memory).
    view = _dlpack.CudaView(cuda).__cuda_array_interface__
    assert view["data"] == (a.ctypes.data, False) and view["shape"] == (5,) and view["typestr"] == "<f4"
    assert view["stream"] == _dlpack.STREAM
    assert _dlpack.device_type(object()) is None


def test_host_dlpack_arrays_in_collectives():
    proc = run_mpi(2, "dlpack.py", timeout=120)
    assert " 0 failed" in proc.stdout, proc.stdout
