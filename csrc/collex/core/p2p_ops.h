// What the two halves of point-to-point (p2p.cpp: posting and matching;
// p2p_progress.cpp: progress, waits and abandoning) share: the wire formats,
// one operation's state, and how errors name an operation. Internal to them.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <exception>
#include <sstream>
#include <string>
#include <vector>

#include "collex/core/p2p.h"

namespace collex::p2p_detail {

// Payloads up to this size ride in the header's message: one MPI message instead
// of two, and one copy out of the staging buffer that costs less than a message.
constexpr std::size_t kInlineBytes = 8192;
// Larger payloads are cut into MPI messages of at most this many bytes (MPI counts are ints).
constexpr std::size_t kPieceBytes = std::size_t{1} << 28;
constexpr std::uint32_t kMagic = 0x43585031;  // "CXP1"

// What a verdict says of a message.
enum VerdictKind : std::int32_t {
  kRefusedMismatch = 0,  // the receiving buffer is another array (the verdict says which)
  kTaken = 1,
  kRefusedFailure = 2,  // a device receive could not take it (the reply says why)
};

inline int as_int(std::size_t n) { return static_cast<int>(std::min<std::size_t>(n, INT_MAX)); }

}  // namespace collex::p2p_detail

namespace collex {

struct PointToPoint::Header {
  std::uint32_t magic = p2p_detail::kMagic;
  std::uint32_t dtype = 0;
  std::uint64_t count = 0;
  std::uint64_t serial = 0;  // the sender's message number for this (receiver, tag)
  std::int32_t ndim = -1;
  std::int32_t tag = 0;
  std::int64_t dims[MessageShape::kMaxDims] = {};
  std::uint32_t device = 0;  // 1: a device message (its payload is a DeviceEnd's descriptor)
  std::uint32_t unused = 0;

  std::size_t bytes() const { return count * dtype_size(static_cast<DType>(dtype)); }
};

// A receiver's answer to every message: which message, whether it was taken,
// and what the receiving buffer was; then `reply_bytes` of a device receive's
// reply (or of why it refused), which only a device message's verdict carries.
struct PointToPoint::Verdict {
  std::uint64_t serial = 0;
  std::int32_t tag = 0;
  std::int32_t kind = p2p_detail::kRefusedMismatch;  // a VerdictKind
  Header receiver{};
  std::uint64_t reply_bytes = 0;
};
// Where verdicts land: the largest a verdict can be.
struct PointToPoint::VerdictIn {
  Verdict verdict;
  char reply[kDeviceReplyBytes] = {};
};

struct P2pOp {
  bool is_send = false;
  int peer = 0;
  int tag = 0;
  std::uint64_t serial = 0;  // sends: this message's number for (peer, tag)
  Buffer buf{};
  MessageShape shape{};
  // kDeliver: a device receive whose message fits, its copy not queued yet;
  // kDelivering: a wait has claimed it and runs the DeviceEnd's deliver outside the lock.
  enum class Stage { kHeader, kPayload, kDeliver, kDelivering } stage = Stage::kHeader;
  std::vector<char> staging;          // send: the header message; recv: where it lands
  std::vector<MPI_Request> requests;  // pending MPI requests
  bool answered = false;              // sends: the receiver's verdict has come
  std::string refused;                // sends: the receiver's refusal, raised on completion
  bool refused_mismatch = true;       // sends: refused as a mismatch (else a device receive failed)
  std::shared_ptr<DeviceEnd> device;  // a device message's (null: host memory)
  bool finished = false;
  std::exception_ptr error;
};

namespace p2p_detail {

inline std::string describe(DType dtype, std::uint64_t count, int ndim, const std::int64_t* dims) {
  std::ostringstream o;
  o << dtype_name(dtype);
  if (ndim >= 0) {
    o << " shape (";
    for (int i = 0; i < ndim; ++i) o << (i ? ", " : "") << dims[i];
    o << (ndim == 1 ? ",)" : ")");
  } else {
    o << " of " << count << " elements";
  }
  return o.str();
}

// Said of both arrays where one is a CUDA array and the other host memory.
inline std::string memory_of(bool device, bool kinds_differ) {
  if (!kinds_differ) return "";
  return device ? " in device memory" : " in host memory";
}

inline std::string what(const P2pOp& op, int rank) {
  std::ostringstream o;
  o << "[rank " << rank << "] collex." << (op.is_send ? "send to" : "recv from") << " rank " << op.peer << " tag "
    << op.tag;
  return o.str();
}

// what(), and the array: "[rank 0] collex.recv from rank 1 tag 0 (float64 shape (8,))".
inline std::string what_with_array(const P2pOp& op, int rank) {
  return what(op, rank) + " (" + describe(op.buf.dtype, op.buf.count, op.shape.ndim, op.shape.dims) + ")";
}

}  // namespace p2p_detail
}  // namespace collex
