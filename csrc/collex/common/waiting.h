// How collex waits: spin briefly, then yield, then sleep with a growing pause,
// so that ranks outnumbering cores still make progress; and deadlines.
#pragma once

#include <chrono>
#include <functional>

namespace collex {

using Clock = std::chrono::steady_clock;

class Deadline {
 public:
  explicit Deadline(double seconds)
      : seconds_(seconds),
        at_(Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds))) {}
  bool expired() const { return Clock::now() >= at_; }
  double seconds() const { return seconds_; }

 private:
  double seconds_;
  Clock::time_point at_;
};

class Backoff {
 public:
  // One pause between polls: a spin while the wait is a few microseconds old,
  // a yield (so an oversubscribed peer can run on this core) until it is a
  // millisecond old, then sleeps growing from 20 us to 500 us for long waits.
  void pause();

 private:
  unsigned polls_ = 0;
  Clock::time_point started_{};
};

// A hook the bindings install so that long waits on the Python main thread notice
// Ctrl-C. It returns true when the wait should be abandoned. Called at most every
// few milliseconds, from the thread that waits.
using InterruptCheck = std::function<bool()>;
void set_interrupt_check(InterruptCheck check);
bool interrupt_requested();

}  // namespace collex
