// Moving bytes between CUDA device memory and host memory, for CUDA arrays that
// the collectives stage through the host (the CUDA module, collex._cuda).
//
// This is the only code that includes the CUDA runtime. It is linked against the
// static runtime, which loads the driver (libcuda) when first used, so the module
// imports on machines without a GPU and reports "no device" only when asked.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace collex::cuda {

// Number of visible devices; 0 where there is no driver or no device.
int device_count();

// What tells `device` apart from every other GPU (its UUID's 16 bytes): ranks
// whose devices have the same one share a GPU.
std::string device_identity(int device);

// The device that owns the memory at `address`, or -1 for host memory (pageable
// or pinned) and unknown pointers. Throws on a driver error.
int pointer_device(std::uintptr_t address);

// The device allocation that holds `address`: its first byte and size (the
// driver's cuMemGetAddressRange). Throws for memory the driver did not allocate.
struct Allocation {
  std::uintptr_t base = 0;
  std::size_t bytes = 0;
};
Allocation allocation_of(std::uintptr_t address);

// The CUDA IPC handle of the allocation at `base` (allocation_of), for peers to
// open with PeerDeviceBuffer: users' arrays read in place. Throws where there
// is none (memory from cudaMallocAsync pools or the virtual memory API).
std::string ipc_handle(std::uintptr_t base);

// Queues a copy of `bytes` from src to dst (either side on the host or a device;
// unified addressing tells which) in order on `stream` (a cudaStream_t handle as
// the CUDA array interface gives it: 0, 1 = legacy default, 2 = per-thread
// default, or a created stream) of `device`. Throws with the runtime's message.
void copy_async(std::uintptr_t dst, std::uintptr_t src, std::size_t bytes, std::uintptr_t stream, int device);

// copy_async, then waits for the stream: afterwards the host side may be read or reused.
void copy(std::uintptr_t dst, std::uintptr_t src, std::size_t bytes, std::uintptr_t stream, int device);

// A point in a stream's work that the host can wait for (no timing). An
// interprocess one has a handle that other processes open (the second
// constructor) to make their streams wait for it (CUDA IPC events).
class Event {
 public:
  explicit Event(int device, bool interprocess = false);
  Event(const std::string& handle, int device);
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  void record(std::uintptr_t stream);        // marks the work queued on stream so far
  void synchronize();                        // waits until that work has finished
  bool done();                               // whether that work has finished (no wait)
  void order_before(std::uintptr_t stream);  // work queued on `stream` from now on waits for it
  std::string handle() const;                // an interprocess event's CUDA IPC handle (64 bytes)
  int device() const { return device_; }

 private:
  void* event_ = nullptr;  // cudaEvent_t, kept out of this header
  int device_;
};

// A stream of collex's own on `device` that does not wait for the legacy
// default stream: GradientReducer's buckets run on one, beside the backward
// pass's work, ordered after it by events.
class Stream {
 public:
  explicit Stream(int device);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  std::uintptr_t handle() const { return reinterpret_cast<std::uintptr_t>(stream_); }
  int device() const { return device_; }

 private:
  void* stream_ = nullptr;  // cudaStream_t
  int device_;
};

// Makes `device` the calling thread's current device (before a launch).
void select_device(int device);

// Waits until the work queued on `stream` of `device` has finished.
void synchronize(std::uintptr_t stream, int device);

// Device memory other processes can map (CUDA IPC): a rank's staging buffer that
// its peers on the node read directly. Zeroed when made (flag words start at 0),
// which waits for the device; `zeroed` false leaves the contents undefined and
// waits for nothing (a send's own copy of an array, which a copy fills in order).
class SharedDeviceBuffer {
 public:
  SharedDeviceBuffer(std::size_t bytes, int device, bool zeroed = true);
  ~SharedDeviceBuffer();
  SharedDeviceBuffer(const SharedDeviceBuffer&) = delete;
  SharedDeviceBuffer& operator=(const SharedDeviceBuffer&) = delete;

  std::uintptr_t address() const { return reinterpret_cast<std::uintptr_t>(data_); }
  std::size_t bytes() const { return bytes_; }
  std::string handle() const;  // the opaque bytes a peer passes to PeerDeviceBuffer

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
  int device_ = 0;
};

// A peer's SharedDeviceBuffer mapped into this process (on `device`), unmapped
// when destroyed.
class PeerDeviceBuffer {
 public:
  PeerDeviceBuffer(const std::string& handle, int device);
  ~PeerDeviceBuffer();
  PeerDeviceBuffer(const PeerDeviceBuffer&) = delete;
  PeerDeviceBuffer& operator=(const PeerDeviceBuffer&) = delete;

  std::uintptr_t address() const { return reinterpret_cast<std::uintptr_t>(data_); }

 private:
  void* data_ = nullptr;
  int device_ = 0;
};

// Page-locked host memory: the device copies into and out of it at full bus
// speed (pageable memory goes through a driver bounce buffer), and kernels may
// write it directly (mapped; `device_address`).
class PinnedBuffer {
 public:
  explicit PinnedBuffer(std::size_t bytes);
  ~PinnedBuffer();
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  void* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }
  std::uintptr_t device_address() const;  // where kernels see it

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace collex::cuda
