#include "collex/device/cuda_memory.h"

#include <cuda_runtime_api.h>

#include <cstring>
#include <stdexcept>
#include <string>

#include "collex/common/cuda_errors.h"

namespace collex::cuda {
int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

std::string device_identity(int device) {
  cudaDeviceProp properties{};
  throw_if_cuda_failed(cudaGetDeviceProperties(&properties, device), "cudaGetDeviceProperties");
  return std::string(properties.uuid.bytes, sizeof properties.uuid.bytes);
}

int pointer_device(std::uintptr_t address) {
  cudaPointerAttributes attributes{};
  throw_if_cuda_failed(cudaPointerGetAttributes(&attributes, reinterpret_cast<const void*>(address)),
                       "cudaPointerGetAttributes");
  bool on_device = attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged;
  return on_device ? attributes.device : -1;
}

Allocation allocation_of(std::uintptr_t address) {
  // A driver function, found through the runtime so that the module needs no
  // link to libcuda (which machines without a GPU lack).
  using GetAddressRange = int (*)(unsigned long long* base, std::size_t* bytes, unsigned long long address);
  static GetAddressRange get = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
#if CUDART_VERSION >= 12050
    const cudaError_t status =
        cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &fn, 12000, cudaEnableDefault, &found);
#else
    const cudaError_t status = cudaGetDriverEntryPoint("cuMemGetAddressRange", &fn, cudaEnableDefault, &found);
#endif
    if (status != cudaSuccess) cudaGetLastError();
    return status == cudaSuccess && found == cudaDriverEntryPointSuccess ? reinterpret_cast<GetAddressRange>(fn)
                                                                         : nullptr;
  }();
  if (get == nullptr) throw std::runtime_error("collex: the CUDA driver has no cuMemGetAddressRange");
  unsigned long long base = 0;
  std::size_t bytes = 0;
  const int result = get(&base, &bytes, static_cast<unsigned long long>(address));
  if (result != 0) {
    throw std::runtime_error("collex: cuMemGetAddressRange: CUDA driver error " + std::to_string(result) +
                             " (not memory the driver allocated)");
  }
  return {static_cast<std::uintptr_t>(base), bytes};
}

std::string ipc_handle(std::uintptr_t base) {
  cudaIpcMemHandle_t h;
  throw_if_cuda_failed(cudaIpcGetMemHandle(&h, reinterpret_cast<void*>(base)), "cudaIpcGetMemHandle");
  return std::string(reinterpret_cast<const char*>(&h), sizeof h);
}

void copy_async(std::uintptr_t dst, std::uintptr_t src, std::size_t bytes, std::uintptr_t stream, int device) {
  if (bytes == 0) return;
  // A stream belongs to a device; the copy must be issued with that device current.
  throw_if_cuda_failed(cudaSetDevice(device), "cudaSetDevice");
  throw_if_cuda_failed(cudaMemcpyAsync(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), bytes,
                                       cudaMemcpyDefault, reinterpret_cast<cudaStream_t>(stream)),
                       "cudaMemcpyAsync");
}

void copy(std::uintptr_t dst, std::uintptr_t src, std::size_t bytes, std::uintptr_t stream, int device) {
  if (bytes == 0) return;
  copy_async(dst, src, bytes, stream, device);
  throw_if_cuda_failed(cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(stream)), "cudaStreamSynchronize");
}

Event::Event(int device, bool interprocess) : device_(device) {
  throw_if_cuda_failed(cudaSetDevice(device), "cudaSetDevice");
  cudaEvent_t e = nullptr;
  const unsigned flags = cudaEventDisableTiming | (interprocess ? cudaEventInterprocess : 0u);
  throw_if_cuda_failed(cudaEventCreateWithFlags(&e, flags), "cudaEventCreateWithFlags");
  event_ = e;
}

Event::Event(const std::string& handle, int device) : device_(device) {
  cudaIpcEventHandle_t h{};
  if (handle.size() < sizeof h) throw std::invalid_argument("collex: a CUDA IPC event handle is 64 bytes");
  std::memcpy(&h, handle.data(), sizeof h);
  throw_if_cuda_failed(cudaSetDevice(device), "cudaSetDevice");
  cudaEvent_t e = nullptr;
  throw_if_cuda_failed(cudaIpcOpenEventHandle(&e, h), "cudaIpcOpenEventHandle");
  event_ = e;
}

std::string Event::handle() const {
  cudaIpcEventHandle_t h{};
  throw_if_cuda_failed(cudaIpcGetEventHandle(&h, static_cast<cudaEvent_t>(event_)), "cudaIpcGetEventHandle");
  return std::string(reinterpret_cast<const char*>(&h), sizeof h);
}

Event::~Event() {
  if (event_) cudaEventDestroy(static_cast<cudaEvent_t>(event_));
}

void Event::record(std::uintptr_t stream) {
  throw_if_cuda_failed(cudaSetDevice(device_), "cudaSetDevice");
  throw_if_cuda_failed(cudaEventRecord(static_cast<cudaEvent_t>(event_), reinterpret_cast<cudaStream_t>(stream)),
                       "cudaEventRecord");
}

void Event::synchronize() {
  throw_if_cuda_failed(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)), "cudaEventSynchronize");
}

bool Event::done() {
  const cudaError_t status = cudaEventQuery(static_cast<cudaEvent_t>(event_));
  if (status == cudaErrorNotReady) return false;
  throw_if_cuda_failed(status, "cudaEventQuery");
  return true;
}

void Event::order_before(std::uintptr_t stream) {
  throw_if_cuda_failed(cudaSetDevice(device_), "cudaSetDevice");
  throw_if_cuda_failed(cudaStreamWaitEvent(reinterpret_cast<cudaStream_t>(stream), static_cast<cudaEvent_t>(event_), 0),
                       "cudaStreamWaitEvent");
}

Stream::Stream(int device) : device_(device) {
  throw_if_cuda_failed(cudaSetDevice(device), "cudaSetDevice");
  cudaStream_t s = nullptr;
  throw_if_cuda_failed(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  stream_ = s;
}

Stream::~Stream() {
  if (stream_) cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
}

void select_device(int device) { throw_if_cuda_failed(cudaSetDevice(device), "cudaSetDevice"); }

void synchronize(std::uintptr_t stream, int device) {
  throw_if_cuda_failed(cudaSetDevice(device), "cudaSetDevice");
  throw_if_cuda_failed(cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(stream)), "cudaStreamSynchronize");
}

SharedDeviceBuffer::SharedDeviceBuffer(std::size_t bytes, int device, bool zeroed) : bytes_(bytes), device_(device) {
  throw_if_cuda_failed(cudaSetDevice(device), "cudaSetDevice");
  throw_if_cuda_failed(cudaMalloc(&data_, bytes), "cudaMalloc");
  if (!zeroed) return;
  throw_if_cuda_failed(cudaMemset(data_, 0, bytes), "cudaMemset");
  // Zero before any peer maps it (and writes its flags into it).
  throw_if_cuda_failed(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

SharedDeviceBuffer::~SharedDeviceBuffer() {
  if (data_) {
    cudaSetDevice(device_);
    cudaFree(data_);
  }
}

std::string SharedDeviceBuffer::handle() const { return ipc_handle(address()); }

PeerDeviceBuffer::PeerDeviceBuffer(const std::string& handle, int device) : device_(device) {
  cudaIpcMemHandle_t h;
  if (handle.size() != sizeof h) throw std::runtime_error("collex: a CUDA IPC handle has the wrong size");
  std::memcpy(&h, handle.data(), sizeof h);
  throw_if_cuda_failed(cudaSetDevice(device), "cudaSetDevice");
  throw_if_cuda_failed(cudaIpcOpenMemHandle(&data_, h, cudaIpcMemLazyEnablePeerAccess), "cudaIpcOpenMemHandle");
}

PeerDeviceBuffer::~PeerDeviceBuffer() {
  if (data_) {
    cudaSetDevice(device_);
    cudaIpcCloseMemHandle(data_);
  }
}

PinnedBuffer::PinnedBuffer(std::size_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  throw_if_cuda_failed(cudaHostAlloc(&data_, bytes, cudaHostAllocPortable | cudaHostAllocMapped), "cudaHostAlloc");
}

std::uintptr_t PinnedBuffer::device_address() const {
  void* on_device = nullptr;
  throw_if_cuda_failed(cudaHostGetDevicePointer(&on_device, data_, 0), "cudaHostGetDevicePointer");
  return reinterpret_cast<std::uintptr_t>(on_device);
}

PinnedBuffer::~PinnedBuffer() {
  if (data_) cudaFreeHost(data_);
}

}  // namespace collex::cuda
