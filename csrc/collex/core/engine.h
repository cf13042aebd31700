// Runs one communicator's operations in issue order. A synchronous call with
// nothing queued runs inline on the caller's thread (no hand-off on the
// small-message path); anything else goes through a FIFO served by one worker
// thread, started on first use.
#pragma once

#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

namespace collex {

// The handle of an asynchronous operation.
class Work {
 public:
  bool done() const;
  // Blocks until the operation ends; rethrows its error. Notices Ctrl-C on the
  // main thread (throws Interrupted; the operation itself carries on).
  void wait();

  void finish(std::exception_ptr error);

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool finished_ = false;
  std::exception_ptr error_;
};

class Engine {
 public:
  using Task = std::function<void()>;

  Engine() = default;
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Async: returns the handle at once. Sync: returns after the task ran (inline
  // when the queue is empty), rethrowing its error; the returned handle is null.
  std::shared_ptr<Work> submit(Task task, bool async);

  // Waits for queued work, then stops the worker. Idempotent.
  void stop();

 private:
  void worker_loop();

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::pair<Task, std::shared_ptr<Work>>> queue_;
  std::size_t in_flight_ = 0;  // queued or running on the worker
  bool stopping_ = false;
  std::thread worker_;
  std::mutex run_mutex_;  // one operation at a time, inline or on the worker
};

}  // namespace collex
