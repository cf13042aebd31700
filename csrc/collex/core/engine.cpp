#include "collex/core/engine.h"

#include <chrono>

#include "collex/common/errors.h"
#include "collex/common/waiting.h"

namespace collex {

bool Work::done() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return finished_;
}

void Work::wait() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!finished_) {
    cv_.wait_for(lock, std::chrono::milliseconds(20));
    if (!finished_) {
      lock.unlock();
      if (interrupt_requested()) throw Interrupted();
      lock.lock();
    }
  }
  if (error_) std::rethrow_exception(error_);
}

void Work::finish(std::exception_ptr error) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    finished_ = true;
    error_ = std::move(error);
  }
  cv_.notify_all();
}

Engine::~Engine() { stop(); }

std::shared_ptr<Work> Engine::submit(Task task, bool async) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (stopping_) throw CollexError("collex: the communicator has been shut down");
  if (!async && in_flight_ == 0) {
    lock.unlock();
    std::lock_guard<std::mutex> run(run_mutex_);
    task();
    return nullptr;
  }
  auto work = std::make_shared<Work>();
  queue_.emplace_back(std::move(task), work);
  ++in_flight_;
  if (!worker_.joinable()) worker_ = std::thread([this] { worker_loop(); });
  lock.unlock();
  cv_.notify_one();
  if (async) return work;
  work->wait();
  return nullptr;
}

void Engine::worker_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping and drained
    auto [task, work] = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    std::exception_ptr error;
    {
      std::lock_guard<std::mutex> run(run_mutex_);
      try {
        task();
      } catch (...) {
        error = std::current_exception();
      }
    }
    lock.lock();
    --in_flight_;  // before finish(): a caller woken by it may issue inline at once
    lock.unlock();
    work->finish(error);
    lock.lock();
  }
}

void Engine::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

}  // namespace collex
