#include "collex/common/waiting.h"

#include <sched.h>
#include <time.h>

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
  ++polls_;
  if (polls_ < 64) return;  // spin: the peer is probably a few hundred ns away
  if (polls_ < 256) {
    sched_yield();  // let an oversubscribed peer run on this core
    return;
  }
  // Sleep, growing to 200 us, so that idle waiters leave the cores to the workers.
  long ns = 1000L * static_cast<long>(polls_ < 1024 ? 20 : 200);
  timespec ts{0, ns};
  nanosleep(&ts, nullptr);
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
