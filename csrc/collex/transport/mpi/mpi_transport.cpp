#include "collex/transport/mpi/mpi_transport.h"

#include <algorithm>
#include <climits>
#include <string>

#include "collex/common/errors.h"
#include "collex/common/waiting.h"

namespace collex {
namespace {

// Payloads above INT_MAX bytes would need derived datatypes; the algorithms chunk
// far below that, so this is an internal invariant rather than a user error.
int checked_int(std::size_t bytes) {
  if (bytes > static_cast<std::size_t>(INT_MAX)) {
    throw CollexError("collex: internal error: MPI message of " + std::to_string(bytes) + " bytes exceeds INT_MAX");
  }
  return static_cast<int>(bytes);
}

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  return std::string(text, static_cast<std::size_t>(len));
}

}  // namespace

MpiTransport::MpiTransport(MPI_Comm comm) : comm_(comm) {
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  int* ub = nullptr;
  int flag = 0;
  MPI_Comm_get_attr(comm_, MPI_TAG_UB, &ub, &flag);
  if (flag && ub != nullptr && *ub > 0) max_tag_ = static_cast<std::uint32_t>(*ub);
}

MpiTransport::~MpiTransport() = default;

std::uint64_t MpiTransport::park(MPI_Request r) {
  std::uint64_t h;
  if (!free_.empty()) {
    h = free_.back();
    free_.pop_back();
    slots_[h] = r;
  } else {
    h = slots_.size();
    slots_.push_back(r);
    is_recv_.push_back(false);
  }
  return h;
}

void MpiTransport::release(std::uint64_t handle) {
  slots_[handle] = MPI_REQUEST_NULL;
  free_.push_back(handle);
}

Request MpiTransport::isend(int peer, const void* data, std::size_t bytes, std::uint32_t tag) {
  MPI_Request r;
  int rc = MPI_Isend(data, checked_int(bytes), MPI_BYTE, peer, static_cast<int>(tag), comm_, &r);
  if (rc != MPI_SUCCESS)
    throw CollexError("collex: MPI_Isend to rank " + std::to_string(peer) + " failed: " + mpi_error_string(rc));
  Request req{park(r), peer, true};
  is_recv_[req.handle] = false;
  return req;
}

Request MpiTransport::irecv(int peer, void* data, std::size_t bytes, std::uint32_t tag) {
  MPI_Request r;
  int rc = MPI_Irecv(data, checked_int(bytes), MPI_BYTE, peer, static_cast<int>(tag), comm_, &r);
  if (rc != MPI_SUCCESS)
    throw CollexError("collex: MPI_Irecv from rank " + std::to_string(peer) + " failed: " + mpi_error_string(rc));
  Request req{park(r), peer, true};
  is_recv_[req.handle] = true;
  return req;
}

bool MpiTransport::test(Request& req) {
  if (!req.active) return true;
  int done = 0;
  MPI_Status status;
  int rc = MPI_Test(&slots_[req.handle], &done, &status);
  if (rc != MPI_SUCCESS) {
    int cls = 0;
    MPI_Error_class(rc, &cls);
    release(req.handle);
    req.active = false;
    if (cls == MPI_ERR_TRUNCATE) {
      throw CollectiveMismatch("rank " + std::to_string(req.peer) +
                               " sent more data than this rank expected (the ranks called "
                               "different collectives or counts)");
    }
    throw CommunicatorBroken("MPI transfer with rank " + std::to_string(req.peer) + " failed: " + mpi_error_string(rc) +
                             " (the rank, or its node, may have died)");
  }
  if (!done) return false;
  release(req.handle);
  req.active = false;
  return true;
}

bool MpiTransport::foreign_message(int peer, std::uint32_t tag, std::uint32_t same, std::uint32_t differ,
                                   std::uint32_t* found) {
  int flag = 0;
  MPI_Status st;
  MPI_Iprobe(peer, MPI_ANY_TAG, comm_, &flag, &st);
  if (!flag) return false;
  const auto t = static_cast<std::uint32_t>(st.MPI_TAG);
  if ((t & same) != (tag & same) || (t & differ) == (tag & differ)) return false;
  *found = t;
  return true;
}

void MpiTransport::abandon(Request& req) {
  if (!req.active) return;
  MPI_Request& r = slots_[req.handle];
  if (is_recv_[req.handle]) {
    // A cancelled receive completes locally; give it a moment, then leave it be.
    MPI_Cancel(&r);
    Deadline limit(1.0);
    Backoff backoff;
    int done = 0;
    while (!done && !limit.expired()) {
      MPI_Test(&r, &done, MPI_STATUS_IGNORE);
      if (!done) backoff.pause();
    }
    if (!done) MPI_Request_free(&r);
  } else {
    MPI_Request_free(&r);  // the send may still complete; nobody waits for it
  }
  release(req.handle);
  req.active = false;
}

}  // namespace collex
