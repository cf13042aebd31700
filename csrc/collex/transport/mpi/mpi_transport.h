// Point-to-point transport over an MPI communicator (used between nodes, and for
// every peer until a shared-memory transport takes the local ones).
#pragma once

#include <mpi.h>

#include <vector>

#include "collex/transport/transport.h"

namespace collex {

class MpiTransport final : public Transport {
 public:
  // Does not take ownership of `comm`; the communicator that made it outlives it.
  explicit MpiTransport(MPI_Comm comm);
  ~MpiTransport() override;

  const char* name() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::uint32_t max_tag() const override { return max_tag_; }

  Request isend(int peer, const void* data, std::size_t bytes, std::uint32_t tag) override;
  Request irecv(int peer, void* data, std::size_t bytes, std::uint32_t tag) override;
  bool test(Request& req) override;
  void abandon(Request& req) override;
  bool foreign_message(int peer, std::uint32_t tag, std::uint32_t same, std::uint32_t differ,
                       std::uint32_t* found) override;

 private:
  std::uint64_t park(MPI_Request r);
  void release(std::uint64_t handle);

  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
  std::uint32_t max_tag_ = 32767;
  // MPI_Request is an int in some MPIs and a pointer in others: keep them in a
  // table and hand out indices, so Request stays implementation-neutral.
  std::vector<MPI_Request> slots_;
  std::vector<std::uint64_t> free_;
  std::vector<bool> is_recv_;
};

}  // namespace collex
