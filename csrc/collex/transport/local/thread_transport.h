// A transport between threads of one process: every rank of a communicator is
// a thread, and messages are copied through mailboxes in memory. It keeps MPI's
// matching rule (messages of one sender and tag arrive in the order they were
// sent; receives of one sender and tag are matched in the order they were
// posted), so the algorithms' schedules run on it as they run on MPI: in plain
// pytest, without mpirun (core/in_process.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "collex/transport/transport.h"

namespace collex {

// The mailboxes every rank's transport shares.
class LocalFabric {
 public:
  explicit LocalFabric(int size) : inboxes_(static_cast<std::size_t>(size)) {}
  int size() const { return static_cast<int>(inboxes_.size()); }

 private:
  friend class ThreadTransport;
  struct Message {
    int from;
    std::uint32_t tag;
    std::vector<char> bytes;
  };
  std::mutex mutex_;
  std::vector<std::deque<Message>> inboxes_;  // by receiver, in arrival order
};

class ThreadTransport final : public Transport {
 public:
  ThreadTransport(std::shared_ptr<LocalFabric> fabric, int rank) : fabric_(std::move(fabric)), rank_(rank) {}

  const char* name() const override { return "threads"; }
  int rank() const override { return rank_; }
  int size() const override { return fabric_->size(); }
  std::uint32_t max_tag() const override { return (std::uint32_t{1} << 30) - 1; }

  // Sends are buffered: the payload is copied at once and the send completes.
  Request isend(int peer, const void* data, std::size_t bytes, std::uint32_t tag) override;
  Request irecv(int peer, void* data, std::size_t bytes, std::uint32_t tag) override;
  bool test(Request& req) override;
  void abandon(Request& req) override;

 private:
  struct Posted {
    int from;
    std::uint32_t tag;
    char* data;
    std::size_t bytes;
    std::uint64_t order;  // post order, for matching receives of one sender and tag in turn
    bool active;
  };

  std::shared_ptr<LocalFabric> fabric_;
  int rank_;
  std::vector<Posted> receives_;  // indexed by Request::handle - 1 (0: a completed send)
  std::uint64_t posted_ = 0;
};

}  // namespace collex
