// The layout of one rank's control block in a node's shared segment, shared by
// the window's two halves (shm_window.cpp: the segment and the copies;
// shm_window_waits.cpp: markers, call prints, failure reports and waits).
#pragma once

#include <atomic>
#include <cstdint>

#include "collex/transport/shm/peer_regions.h"
#include "collex/transport/shm/shm_window.h"

namespace collex {

// Per rank: one cache line polled by every peer (the marker, the poison word,
// and the calls of the last two operations, so that checking a peer's call costs
// no second line), then what the rank publishes per operation, then the text of
// the failure it reported. Only the owning rank writes any of them.
struct ShmWindow::Control {
  alignas(64) std::atomic<std::uint64_t> marker;
  std::atomic<std::uint64_t> poison;  // 0, or the Failure this rank reported (or kLeft: it shut down)
  // print[e & 1]: operation e's call, three words: (epoch low 32 bits | kind |
  // dtype | op), root, count. Rewritten two operations later, so a reader
  // checks the epoch before and after reading.
  std::atomic<std::uint64_t> print[2][3];
  alignas(64) std::uint64_t input;
  std::uint64_t result;
  std::uint64_t note;
  // The shared regions (shm/shared_pages.h) holding the input [0] and the
  // result [1], if any, and the regions this rank had released by then.
  shm::PublishedRegion shared[2];
  shm::ReleaseLog released;
  // The shared regions holding the spans an operation reads (publish_spans).
  std::uint32_t directory_count;
  shm::PublishedRegion directory[kDirectory];
  std::int32_t pid;
  char reason[512];  // the reported failure, written before `poison`
};
static_assert(sizeof(std::atomic<std::uint64_t>) == 8, "the polled line holds marker, poison and two calls");
static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "markers must be lock-free in shared memory");

// Inline: every poll of a wait reads a control block.
inline ShmWindow::Control& ShmWindow::control(int r) const { return static_cast<Control*>(base_)[r]; }

}  // namespace collex
