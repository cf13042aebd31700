// How collex waits: spin briefly, then yield, then sleep with a growing pause,
// so that ranks outnumbering cores still make progress; and deadlines.
#pragma once

#include <chrono>
#include <functional>
#include <string>

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

// A wait that lasts: says once, when it has lasted `after_s`, that it is time
// to tell the user (who would otherwise stare at a silent hang until the timeout).
class StallWarning {
 public:
  explicit StallWarning(double after_s) : after_s_(after_s), deadline_(after_s) {}
  // True the first time it is asked after `after_s` seconds; false ever after.
  bool due() {
    if (warned_ || !deadline_.expired()) return false;
    warned_ = true;
    return true;
  }
  double after_s() const { return after_s_; }

 private:
  double after_s_;
  Deadline deadline_;
  bool warned_ = false;
};

// Writes "collex: <text>" and a newline to stderr at once (one write, so that
// the lines of several ranks do not interleave mid-line).
void warn(const std::string& text);
// "0.3 s", "60 s": a duration as messages show it.
std::string seconds_text(double seconds);

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
