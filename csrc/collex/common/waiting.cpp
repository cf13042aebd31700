#include "collex/common/waiting.h"

#include <sched.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <mutex>
#include <thread>

namespace collex {
namespace {

InterruptCheck& interrupt_check_slot() {
  static InterruptCheck check;
  return check;
}

// Only the thread that installed the hook (the interpreter's main thread) asks it.
std::thread::id& interrupt_thread() {
  static std::thread::id id;
  return id;
}

}  // namespace

void Backoff::pause() {
  if (polls_++ < 64) return;  // spin: the peer is probably a few hundred ns away
  const auto now = Clock::now();
  if (polls_ == 65) started_ = now;
  const auto waited = now - started_;
  if (waited < std::chrono::milliseconds(1)) {
    sched_yield();
    return;
  }
  const long us = waited < std::chrono::milliseconds(50) ? 20 : 500;
  timespec ts{0, us * 1000L};
  nanosleep(&ts, nullptr);
}

void warn(const std::string& text) {
  const std::string line = "collex: " + text + "\n";
  if (::write(2, line.data(), line.size()) < 0) {
    // Nothing to do: stderr is gone.
  }
}

std::string seconds_text(double seconds) {
  char text[32];
  std::snprintf(text, sizeof text, "%g s", seconds);
  return text;
}

void set_interrupt_check(InterruptCheck check) {
  interrupt_check_slot() = std::move(check);
  interrupt_thread() = std::this_thread::get_id();
}

bool interrupt_requested() {
  auto& check = interrupt_check_slot();
  if (!check || std::this_thread::get_id() != interrupt_thread()) return false;
  return check();
}

}  // namespace collex
