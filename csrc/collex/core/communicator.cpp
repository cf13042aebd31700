// The communicator's life and dispatch: set-up (topology, tags, the failure
// watch, the runners the algorithms use), the queue of operations with their
// sequence numbers, the tuner's choice for each, and what a failure does to
// the communicator. The entry points that check and queue calls are in
// communicator_calls.cpp.
#include "collex/core/communicator.h"

#include <mpi.h>

#include <cstdio>
#include <cstring>

#include "collex/algorithms/message_runner.h"
#include "collex/algorithms/window_runner.h"
#include "collex/common/errors.h"
#include "collex/core/failure_watch.h"
#include "collex/core/fingerprint.h"
#include "collex/core/topology.h"
#include "collex/kernels/copy.h"
#include "collex/transport/shm/shm_window.h"
#include "collex/transport/transport.h"

namespace collex {

Communicator::Communicator(long fortran_handle, double timeout_s) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) throw CollexError("collex: MPI is not initialised (import mpi4py.MPI first)");
  config_ = Config::from_env(timeout_s);
  algo_from_string(config_.algo, &forced_algo_);
  tuner_ = Tuner(config_.debug);
  // The streaming copy's loop is one per process (the kernels'); every
  // communicator reads the same environment.
  if (kernels::CopyLoop loop; kernels::copy_loop_from_name(config_.copy_loop, &loop)) kernels::use_copy_loop(loop);

  MPI_Comm user = MPI_Comm_f2c(static_cast<MPI_Fint>(fortran_handle));
  if (user == MPI_COMM_NULL) throw InvalidArgument("collex.Communicator: comm is MPI.COMM_NULL");
  topo_ = std::make_unique<Topology>(user, config_);
  rank_ = topo_->rank;
  size_ = topo_->size;

  // Tags: the lower half of the tag space carries collectives, the upper half
  // point-to-point messages. Point-to-point takes three blocks of user tags
  // (headers, payloads, verdicts) from the upper half, and failure reports the
  // first tag of the fourth: never one a collective's wait could take for a
  // peer's differently called operation.
  tags_ = TagSpace(topo_->world->max_tag());
  if (tags_.bits() - 1 < PointToPoint::kUserTagBits + 2)
    throw CollexError("collex: this MPI's tag space (MPI_TAG_UB) is too small for collex");
  const std::uint32_t p2p_base = tags_.upper_half();
  watch_ = std::make_unique<FailureWatch>(topo_->comm, topo_->local,
                                          static_cast<int>(p2p_base + (std::uint32_t{3} << PointToPoint::kUserTagBits)),
                                          &describe_call);
  max_user_tag_ = (1 << PointToPoint::kUserTagBits) - 1;
  p2p_ = std::make_shared<PointToPoint>(topo_->comm, rank_, p2p_base, config_.timeout_s, config_.warn_after_s,
                                        watch_.get(), [this](const std::string& reason) { set_broken(reason); });

  topo_->connect(config_);
  ShmWindow* window = topo_->window.get();
  if (window) {
    window->set_describer(&describe_call);
    window->set_warn_after(config_.warn_after_s);
    // Ranks of other nodes wait over MPI: waits on the window hear of them through the watch.
    if (topo_->local_size < size_)
      window->set_watch(watch_.get(), ranks_in_comm(topo_->local, topo_->comm), &running_seq_, &running_);
    node_ = std::make_unique<WindowRunner>(
        *window, WindowRunner::Settings{rank_, config_.timeout_s, config_.debug, config_.midsize_copy,
                                        config_.stage_writes, config_.result_writes});
  }
  messages_ = std::make_unique<MessageRunner>(
      MessageRunner::Settings{rank_, size_, config_.timeout_s, config_.warn_after_s, config_.chunk_bytes,
                              config_.chunk_bytes_set, config_.debug},
      tags_, watch_.get(), &running_);

  node_leader_ = topo_->node_leader;
  site_.rank = rank_;
  site_.size = size_;
  site_.local_rank = topo_->local_rank;
  site_.local_size = topo_->local_size;
  site_.nodes = topo_->nodes;
  site_.max_local_size = topo_->max_local_size;
  site_.world = topo_->world.get();
  site_.messages = messages_.get();
  site_.node = node_.get();
  site_.leaders = topo_->leader_transport.get();
  site_.slices = topo_->slice_transport.get();
  site_.leader_ranks = &topo_->leader_ranks;
  site_.slice_ranks = &topo_->slice_ranks;
  site_.hier_everywhere = topo_->hier_everywhere;
  site_.scratch = &scratch_;
}

const char* Communicator::window_name() const { return topo_->window ? topo_->window->name() : ""; }

std::string Communicator::copy_ways() {
  std::string text;
  // Read on the engine's thread, which changes the ways, after queued operations.
  engine_.submit([&] { text = node_ ? node_->copy_ways() : ""; }, /*async=*/false);
  return text;
}

std::shared_ptr<SymmetricMemory> Communicator::allocate_symmetric(std::size_t bytes) {
  std::shared_ptr<SymmetricMemory> memory;
  engine_.submit(
      [&] {
        throw_if_broken("empty");
        if (!node_) return;
        // The segment is made with MPI calls that have no deadline, so the node's
        // ranks first meet on the window, which compares what each called: when
        // a rank called something else (or another size), every rank raises
        // CollectiveMismatch, and no rank waits in MPI or leaves a segment behind.
        CollectiveCall meet;
        meet.kind = Collective::kAllocate;
        meet.in = meet.out = Buffer{nullptr, bytes, DType::kUInt8};
        meet.seq = next_seq_;
        try {
          node_->run(meet, "direct");
        } catch (const std::exception& e) {
          tell_others(e);
          mark_broken(e.what());
          throw;
        }
        memory = topo_->window->allocate(bytes);
      },
      /*async=*/false);
  return memory;
}

Communicator::~Communicator() { shutdown(); }

void Communicator::shutdown(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(state_mutex_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  engine_.stop();
  // A peer that still waits for this rank (its program went on, or this one
  // ended early) raises at once instead of waiting out its timeout. A broken
  // communicator has told its peers already.
  if (!broken() && size_ > 1) {
    const std::string text = why.empty() ? "left the communicator (collex.finalize(), or the end of its program)" : why;
    if (topo_->window) topo_->window->report(Failure::kLeft, text);
    if (watch_) {
      watch_->report(Failure::kLeft, next_seq_, text);
      watch_->settle(0.2);
    }
  }
  if (p2p_) p2p_->abandon_all();
  site_ = Site{};
  node_.reset();
  topo_->close();
  watch_.reset();
  topo_->release_mpi();
}

int Communicator::max_user_tag() const { return max_user_tag_; }

bool Communicator::broken() const { return broken_.load(); }

std::string Communicator::broken_reason() const {
  std::lock_guard<std::mutex> lock(state_mutex_);
  return broken_reason_;
}

void Communicator::set_broken(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(state_mutex_);
    if (!broken_.load()) broken_reason_ = reason;
  }
  broken_.store(true);
}

void Communicator::mark_broken(const std::string& reason) {
  set_broken(reason);
  messages_->abandon_staging();
}

std::shared_ptr<Communicator> Communicator::split(int color, int key) {
  // Every rank is here first, so none waits in MPI_Comm_split (which has no
  // deadline) for one that is not; under split's own name, so a rank that called
  // barrier or another collective instead is told.
  meet(Collective::kSplit, /*async=*/false);
  std::shared_ptr<Communicator> result;
  engine_.submit(
      [&] {
        throw_if_broken("split");
        MPI_Comm part = MPI_COMM_NULL;
        MPI_Comm_split(topo_->comm, color < 0 ? MPI_UNDEFINED : color, key, &part);
        if (part == MPI_COMM_NULL) return;
        try {
          result = std::make_shared<Communicator>(static_cast<long>(MPI_Comm_c2f(part)), config_.timeout_s);
        } catch (...) {
          MPI_Comm_free(&part);
          throw;
        }
        MPI_Comm_free(&part);
      },
      /*async=*/false);
  return result;
}

void Communicator::throw_if_broken(const char* operation) const {
  if (broken()) {
    throw CommunicatorBroken("[rank " + std::to_string(rank_) + "] collex." + operation +
                             ": communicator is broken by an earlier failure: " + broken_reason());
  }
}

std::shared_ptr<Work> Communicator::submit(Call call, bool async) {
  throw_if_broken(collective_name(call.call.kind));
  call.call.seq = next_seq_++;  // numbered alike on every rank
  return engine_.submit([this, call] { run(call); }, async);
}

void Communicator::run(const Call& c) {
  throw_if_broken(collective_name(c.call.kind));
  running_ = print_of(c.call);
  running_seq_ = c.call.seq;
  // A mismatch found by the fingerprint check is raised on every rank alike and
  // leaves the communicator usable; any failure on the wire breaks it.
  if (config_.check && size_ > 1) {
    try {
      check_fingerprints(c.call, site_);
    } catch (const CollectiveMismatch&) {
      throw;
    } catch (const std::exception& e) {
      tell_others(e);
      mark_broken(e.what());
      throw;
    }
  }
  // A hook that fails leaves the peers waiting for this rank, so it breaks the
  // communicator like a failure on the wire.
  try {
    if (c.before) c.before();
    run_collective(c);
    if (c.after) c.after();
  } catch (const InvalidArgument&) {
    throw;
  } catch (const std::exception& e) {
    tell_others(e);
    mark_broken(e.what());
    throw;
  }
}

// A failure this rank found goes to every other rank, so that none waits out its
// timeout for a rank that will not come: on the node's window (its waits look at
// the poison word) and over MPI (waits there ask the watch).
void Communicator::tell_others(const std::exception& e) {
  const Failure kind = failure_of(e);
  if (kind == Failure::kNone || size_ == 1) return;
  // A failure heard over MPI still goes on the window: node-mates waiting there
  // do not listen to MPI. Heard ones are not sent over MPI again (all got them).
  if (topo_->window) topo_->window->report(kind, e.what());
  if (!is_relayed(e)) watch_->report(kind, 0, e.what());
}

void Communicator::run_collective(const Call& queued) {
  const CollectiveCall& c = queued.call;
  // Alone, every collective's result is its input (a segmented one's data is its own average).
  if (size_ == 1) {
    if (c.segments || meets_only(c.kind) || c.kind == Collective::kBroadcast) return;
    const std::size_t bytes = c.kind == Collective::kReduceScatter ? c.out.bytes() : c.in.bytes();
    if (c.out.data != c.in.data && bytes > 0) std::memmove(c.out.data, c.in.data, bytes);
    return;
  }
  tuner_.choose(c, site_, queued.algo, forced_algo_).run(c, site_);
}

}  // namespace collex
