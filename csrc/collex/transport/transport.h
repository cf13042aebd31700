// How bytes move between two ranks of a communicator. A transport knows neither
// the collective it serves nor the element type: it moves tagged byte ranges.
// Matching follows MPI's rule: messages between one pair with one tag arrive in
// the order they were posted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace collex {

// A pending send or receive. The transport owns what `handle` refers to.
struct Request {
  std::uint64_t handle = 0;
  int peer = -1;
  bool active = false;
};

class Transport {
 public:
  virtual ~Transport() = default;

  virtual const char* name() const = 0;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // The tag values this transport can carry are [0, max_tag()].
  virtual std::uint32_t max_tag() const = 0;

  virtual Request isend(int peer, const void* data, std::size_t bytes, std::uint32_t tag) = 0;
  virtual Request irecv(int peer, void* data, std::size_t bytes, std::uint32_t tag) = 0;

  // Makes progress and reports whether `req` has completed; a completed request
  // becomes inactive. Throws CollexError when the transfer failed (e.g. truncation:
  // the peer sent more bytes than were expected).
  virtual bool test(Request& req) = 0;

  // Gives up on a request after a failure. Receives are cancelled so that no late
  // message lands in the buffer; sends are detached. Never blocks for long.
  virtual void abandon(Request& req) = 0;

  // Whether a message from `peer` waits to be received whose tag agrees with
  // `tag` on the bits of `same` and differs from it on the bits of `differ`; its
  // tag in *found. Off the fast path (a wait that made no quick progress).
  // Default: never.
  virtual bool foreign_message(int peer, std::uint32_t tag, std::uint32_t same, std::uint32_t differ,
                               std::uint32_t* found) {
    (void)peer, (void)tag, (void)same, (void)differ, (void)found;
    return false;
  }
};

}  // namespace collex
