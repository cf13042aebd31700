// How mid-size all-reduces, broadcasts and all-gathers on a node move their
// data: streamed through the ranks' slots in the shared segment (two copies,
// both in cache, no system calls), or read from the peers' buffers in one copy
// by cross-memory attach (which pins every page it copies). Which is faster
// depends on the machine and, on a shared virtual machine, on the minute: on
// the project's 2-core VM a 128 KiB broadcast streamed at 12.7 GB/s in one
// launch and 3.5 GB/s in another the same day, and a start-up measurement chose
// the slots minutes before they ran up to 6x slower than attaching
// (bench/README.md).
//
// So the way is decided while running, from the operations themselves, per
// collective and size class (sizes up to a power of two). Every operation of a
// class is timed; at the end of each window of them the ranks exchange their
// mean times (a 16-byte all-reduce through the window), so all know the slowest
// rank's. Now and then, or at once when the way in use has slowed by half, a
// few operations take the other way (a probe), and the other way takes over if
// it was faster by a margin. Probes of a choice that held grow rarer, the more
// so the slower the other way was, so a steady machine pays little for them.
// Every decision depends only on operation counts and exchanged times that all
// ranks share, so the ranks of a node always take the same way (they must: the
// two ways synchronise differently).
//
// Staged operations (direct::Staged) are decided the same way, per collective
// and size class, between two ways of writing a rank's slot: ordinary stores
// (first, `slots` in a Pick) and streaming stores (direct::Op::stream_stage).
// Either way the ranks synchronise alike, so for them agreeing is not needed
// for correctness, only for comparing like with like. So are all-reduces that
// read peers' buffers in place (direct::Large, 1-16 MiB), between ordinary and
// streaming stores for their results (direct::Op::result_stores).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "collex/algorithms/direct.h"

namespace collex {

class CopyWays {
 public:
  // Never re-decide: every mid-size operation streams through the slots (slots
  // = true) or is read in one copy. For COLLEX_MIDSIZE_COPY, and for windows
  // that cannot read peers.
  void fix(bool slots);

  // The way one operation takes, with what record() and settle() need.
  struct Pick {
    std::size_t slots_limit = direct::kSlotsLimit;  // for direct::Op::slots_limit
    int kind = -1, size_class = -1;                 // -1: a way that is fixed or plays no part
    bool slots = true;                              // the way it takes
    bool timed = false;                             // record() its time
    bool settle = false;                            // it ends a window: the ranks exchange their times after it
  };
  // `bytes` as direct::midsize_bytes gives it (0: the way plays no part).
  Pick pick(direct::Streamable kind, std::size_t bytes);
  // A staged operation's way: `slots` true for ordinary stores, false for
  // streaming ones; `bytes` as direct::staged_write_bytes gives it (0: ordinary
  // stores, untimed). Not affected by fix().
  Pick pick(direct::Staged kind, std::size_t bytes);
  // How an operation that reads peers in place writes its results: `slots`
  // true for ordinary stores, false for streaming ones; `bytes` as
  // direct::large_bytes gives it. Untimed, by size, for collectives other than
  // all-reduces and outside direct::kMinChosenStores to kMaxChosenStores. Not
  // affected by fix().
  Pick pick(direct::Large kind, std::size_t bytes);
  // What a pick decides, in words: "mid-size copies", "staged writes" or "result writes".
  static const char* decides(const Pick& p);
  // This rank's time for a picked operation that moved `bytes`.
  void record(const Pick& pick, std::size_t bytes, double seconds);
  // This rank's mean seconds per byte in the window that `pick` ended, through
  // the slots and by attaching (1e30 for a way not taken), for the ranks to exchange.
  std::array<double, 2> mean(const Pick& pick) const;
  // Decides from every rank's times (the slowest rank's of each way): whether
  // to probe next, or after a probe which way to keep. Returns a line for
  // COLLEX_DEBUG when it decided a probe, "" otherwise.
  std::string settle(const Pick& pick, const std::array<double, 2>& slowest);

  // The way each size class used so far takes now, e.g. "broadcast <=256 KiB
  // slots, <=1 MiB attach; all-gather ...", or the fixed way.
  std::string describe() const;

 private:
  struct Class {
    // Alike on every rank: counts, and times every rank exchanged.
    std::uint64_t ops = 0;         // operations of the class so far
    bool slots = true;             // the way in use (outside probes)
    bool probing = false;          // the window under way is a probe of the other way
    std::uint64_t window_end = 0;  // the operation count at which it ends
    std::uint64_t probe_at = 0;    // the first window that ends at or after this is followed by a probe
    std::uint64_t interval = 0;    // operations from one probe to the next
    double reference = 0;          // seconds per byte of the way in use when it was last chosen
    double in_use = 0;             // ... in the last window before a probe
    // This rank's own: its seconds and bytes in the window under way, through the slots and by attaching.
    double seconds[2] = {0, 0}, bytes[2] = {0, 0};
  };
  static constexpr int kMidsizeKinds = 3;                // direct::Streamable
  static constexpr int kLargeKinds = kMidsizeKinds + 5;  // then direct::Staged
  static constexpr int kKinds = kLargeKinds + 2;         // then direct::Large's all-reduce and segments
  static constexpr int kClasses = 25;                    // by bit width of bytes - 1: up to 16 MiB

  static const char* way_name(int kind, bool first);
  // `first_up_to`: a class of up to this many bytes starts on the first way
  // (slots, ordinary stores), a larger one on the second.
  Pick pick_class(int kind, std::size_t bytes, std::size_t first_up_to);

  bool fixed_ = false, fixed_slots_ = true;
  std::array<std::array<Class, kClasses>, kKinds> classes_{};
};

}  // namespace collex
