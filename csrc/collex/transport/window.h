// Memory that the ranks of one node share, for algorithms that read their peers
// directly instead of exchanging messages: per-rank progress markers, small
// per-rank staging slots every rank can read, and single-copy reads of a peer's
// own buffers. An algorithm written against a Window never learns how the
// sharing is done (POSIX shared memory and cross-memory attach for CPU ranks).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "collex/common/call_print.h"
#include "collex/common/memory.h"
#include "collex/kernels/copy.h"

namespace collex {

// What a wait is for, named in its timeout message. Formatted only when a wait
// times out: building the text before every wait took about a tenth of a small
// broadcast's time on 2 ranks (perf).
class WaitContext {
 public:
  virtual std::string describe() const = 0;

 protected:
  ~WaitContext() = default;
};

// Markers of window operation e lie in [e * kMarkersPerEpoch, (e + 1) * kMarkersPerEpoch):
// a marker tells which operation it belongs to.
constexpr std::uint64_t kMarkersPerEpoch = std::uint64_t{1} << 32;

class Window {
 public:
  virtual ~Window() = default;

  virtual const char* name() const = 0;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Staging slot of rank r, two per rank (parity 0 and 1) so that consecutive
  // operations never write the slot a slow peer may still be reading.
  virtual char* slot(int r, int parity) = 0;
  virtual std::size_t slot_bytes() const = 0;

  // Whether read() works (cross-memory attach may be forbidden by the system).
  virtual bool can_read_peers() const = 0;

  // Addresses this rank exposes for the current operation (its input, and where
  // its results are); visible to peers once they have seen a later marker.
  virtual void publish(std::uintptr_t input, std::uintptr_t result) = 0;
  virtual std::uintptr_t peer_input(int r) const = 0;
  virtual std::uintptr_t peer_result(int r) const = 0;
  // A word this rank publishes beside them: a choice of one rank that every rank
  // must follow (a reduce's root says how the blocks are split). Set it after
  // publish(), which clears it.
  virtual void publish_note(std::uint64_t note) = 0;
  virtual std::uint64_t peer_note(int r) const = 0;

  // Copies `bytes` from address `remote` of rank r's memory to `local`, where
  // that memory is mapped here with the stores `stores` says (by size: of
  // these bytes; kernels/copy.h). Throws CollexError naming the rank when the
  // peer is gone or the read fails.
  virtual void read(int r, std::uintptr_t remote, void* local, std::size_t bytes, kernels::Stores stores) = 0;

  // Gathers the spans `remote` of rank r's memory, in order, into the spans
  // `local` of this rank's (both lists cover the same number of bytes): a read
  // of data that lies in many pieces on both sides, in as few calls as possible.
  // Stores as read's (by size: of all the spans).
  virtual void read_spans(int r, const Span* remote, std::size_t n_remote, const Span* local, std::size_t n_local,
                          kernels::Stores stores) = 0;

  // Copies `bytes` from `local` to address `remote` of rank r's memory: lets a
  // rank that holds data share the copying with the ranks that need it. Stores as read's.
  virtual void write(int r, std::uintptr_t remote, const void* local, std::size_t bytes, kernels::Stores stores) = 0;

  // Where this rank sees [remote, remote + bytes) of rank r's memory, when that
  // range lies in memory the ranks share (a symmetric buffer), else null.
  virtual const char* mapped(int r, std::uintptr_t remote, std::size_t bytes) const = 0;

  // The part of [remote, remote + bytes) of rank r's memory that peers reach in
  // place (all of it in a symmetric buffer; an ordinary array's whole pages
  // once they were moved onto shared pages), in rank r's addresses; empty
  // (bytes 0) when none.
  virtual Span shared_part(int r, std::uintptr_t remote, std::size_t bytes) const = 0;

  // After publish(): the operation's data lies in these spans of this rank's
  // memory (a table published as its input). Where they lie in memory moved
  // onto shared pages, peers' read_spans of them read in place.
  virtual void publish_spans(const Span* spans, std::size_t n) = 0;

  // Operation `epoch` (numbered alike on every rank, from 1) is `call` on this
  // rank: published with its first marker; every wait for a peer's marker of
  // that operation then compares the peer's call with it and throws
  // CollectiveMismatch on a difference (having told the other ranks, whose
  // waits throw too). Without an announcement nothing is compared.
  virtual void announce(std::uint64_t epoch, const CallPrint& call) = 0;
  virtual void set_describer(CallDescriber describe) = 0;

  // Sets this rank's progress marker (markers only grow): everything this rank
  // wrote before is visible to a peer that then sees the marker.
  virtual void arrive(std::uint64_t marker) = 0;

  // Waits until every rank's marker is at least `marker`. `what` prefixes the
  // timeout message, which names the ranks that had not arrived.
  virtual void wait_all(std::uint64_t marker, double timeout_s, const WaitContext& what) = 0;

  // The same for rank r alone.
  virtual void wait_for(int r, std::uint64_t marker, double timeout_s, const WaitContext& what) = 0;
};

}  // namespace collex
