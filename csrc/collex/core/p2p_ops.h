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

  std::size_t bytes() const { return count * dtype_size(static_cast<DType>(dtype)); }
};

// A receiver's answer to every message: which message, whether it was taken,
// and what the receiving buffer was.
struct PointToPoint::Verdict {
  std::uint64_t serial = 0;
  std::int32_t tag = 0;
  std::int32_t accepted = 0;
  Header receiver{};
};

struct P2pOp {
  bool is_send = false;
  int peer = 0;
  int tag = 0;
  std::uint64_t serial = 0;  // sends: this message's number for (peer, tag)
  Buffer buf{};
  MessageShape shape{};
  enum class Stage { kHeader, kPayload } stage = Stage::kHeader;
  std::vector<char> staging;          // send: the header message; recv: where it lands
  std::vector<MPI_Request> requests;  // pending MPI requests
  bool answered = false;              // sends: the receiver's verdict has come
  std::string refused;                // sends: the receiver's refusal, raised on completion
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
