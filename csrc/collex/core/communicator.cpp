#include "collex/core/communicator.h"

#include <mpi.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "collex/algorithms/barrier.h"
#include "collex/algorithms/direct.h"
#include "collex/algorithms/ring.h"
#include "collex/algorithms/tree.h"
#include "collex/common/errors.h"
#include "collex/core/failure_watch.h"
#include "collex/transport/mpi/mpi_transport.h"
#include "collex/transport/shm/shm_window.h"

namespace collex {

struct MpiHandles {
  MPI_Comm comm = MPI_COMM_NULL;     // collex's private duplicate
  MPI_Comm local = MPI_COMM_NULL;    // the ranks sharing this node
  MPI_Comm leaders = MPI_COMM_NULL;  // local rank 0 of every node (null elsewhere)
  MPI_Comm slices = MPI_COMM_NULL;   // the ranks of the same local rank, one per node

  void release() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;  // MPI already reclaimed everything
    if (leaders != MPI_COMM_NULL) MPI_Comm_free(&leaders);
    if (slices != MPI_COMM_NULL) MPI_Comm_free(&slices);
    if (local != MPI_COMM_NULL) MPI_Comm_free(&local);
    if (comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
  }
};

struct Communicator::Call {
  Collective kind = Collective::kAllreduce;
  Buffer in{};
  Buffer out{};
  ReduceOp op = ReduceOp::kSum;
  Algo algo = Algo::kAuto;
  int root = 0;
  std::uint64_t seq = 0;
  Hook before, after;  // caller's work around the collective, on the engine (may be empty)
  std::shared_ptr<const std::vector<Span>> segments;  // allreduce_segments: where the data lies
};

namespace {

// The channel block of a collective's tags: schedules use channels 0-3; the
// fingerprint check uses channel 7 of the same operation.
constexpr int kChannelBits = 3;
constexpr int kCheckChannel = 7;
// Collective tags carry this many bits of a hash of the call (collective, count,
// dtype, op, root): messages of ranks that called differently never match, and
// a rank left waiting finds the other call's message pending (foreign_message).
constexpr int kHashBits = 12;
// Hierarchical all-reduces above this size split the work into slices, one per
// local rank; smaller ones go through the leaders alone.
constexpr std::size_t kSlicesMinBytes = 64 * 1024;

// Each rank's staging slot in the node's shared segment (two per rank): small
// operations stage their data there; mid-size all-reduces, broadcasts and
// all-gathers stream through it in chunks of a quarter, where larger chunks mean
// fewer synchronisations as long as they stay in cache: 2 MiB over all ranks,
// between 64 KiB and 1 MiB each (on 2 ranks, 1 MiB slots streamed broadcasts and
// all-gathers about 2x faster than 64 KiB ones; bench/README.md). The segment is
// then about 4 MiB up to 32 ranks.
std::size_t slot_bytes_for(int local_size) {
  constexpr std::size_t kBudget = 2 * 1024 * 1024, kMin = 64 * 1024, kMax = 1024 * 1024;
  return std::clamp(kBudget / static_cast<std::size_t>(std::max(local_size, 1)), kMin, kMax);
}

int bit_width_of(std::uint32_t max_tag) {
  int bits = 0;
  while (bits < 31 && (std::uint64_t{1} << (bits + 1)) - 1 <= max_tag) ++bits;
  return bits;
}

bool reduces(Collective k) {
  return k == Collective::kAllreduce || k == Collective::kReduce || k == Collective::kReduceScatter;
}
bool rooted(Collective k) { return k == Collective::kBroadcast || k == Collective::kReduce; }

// Names a rank's call in a mismatch found by the window.
std::string describe_call(const CallPrint& c) {
  const auto kind = static_cast<Collective>(c.kind);
  std::ostringstream o;
  o << collective_name(kind) << "(count=" << c.count << ", " << dtype_name(static_cast<DType>(c.dtype));
  if (reduces(kind)) o << ", op=" << reduce_op_name(static_cast<ReduceOp>(c.op));
  if (rooted(kind)) o << ", root=" << c.root;
  o << ")";
  return o.str();
}

// Rank i of `part` is rank result[i] of `whole` (part's ranks all belong to whole).
std::vector<int> ranks_in_comm(MPI_Comm part, MPI_Comm whole) {
  MPI_Group pg, wg;
  MPI_Comm_group(part, &pg);
  MPI_Comm_group(whole, &wg);
  int n = 0;
  MPI_Group_size(pg, &n);
  std::vector<int> mine(static_cast<std::size_t>(n)), theirs(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) mine[static_cast<std::size_t>(i)] = i;
  MPI_Group_translate_ranks(pg, n, mine.data(), wg, theirs.data());
  MPI_Group_free(&pg);
  MPI_Group_free(&wg);
  return theirs;
}

std::string rank_prefix(int rank, Collective c) {
  return "[rank " + std::to_string(rank) + "] collex." + collective_name(c) + ": ";
}

}  // namespace

Communicator::Communicator(long fortran_handle, double timeout_s) : mpi_(std::make_unique<MpiHandles>()) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) throw CollexError("collex: MPI is not initialised (import mpi4py.MPI first)");
  config_ = Config::from_env(timeout_s);
  algo_from_string(config_.algo, &forced_algo_);

  MPI_Comm user = MPI_Comm_f2c(static_cast<MPI_Fint>(fortran_handle));
  if (user == MPI_COMM_NULL) throw InvalidArgument("collex.Communicator: comm is MPI.COMM_NULL");
  if (MPI_Comm_dup(user, &mpi_->comm) != MPI_SUCCESS) throw CollexError("collex: MPI_Comm_dup failed");
  MPI_Comm_set_errhandler(mpi_->comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank(mpi_->comm, &rank_);
  MPI_Comm_size(mpi_->comm, &size_);
  if (config_.node_size > 0) {
    // Pretend nodes of node_size consecutive ranks, to test multi-node paths on one machine.
    MPI_Comm_split(mpi_->comm, rank_ / config_.node_size, rank_, &mpi_->local);
  } else {
    MPI_Comm_split_type(mpi_->comm, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &mpi_->local);
  }
  MPI_Comm_rank(mpi_->local, &local_rank_);
  MPI_Comm_size(mpi_->local, &local_size_);

  auto mpi = std::make_unique<MpiTransport>(mpi_->comm);
  // Tags: the lower half of the tag space carries collectives (sequence number and
  // channel), the upper half point-to-point messages (the user's tag).
  const int bits = bit_width_of(mpi->max_tag());
  p2p_tag_base_ = std::uint32_t{1} << (bits - 1);
  // At least 8 bits of sequence number; what the tag space leaves beyond that
  // carries the call's hash (none on an MPI of the minimum tag space).
  hash_bits_ = std::clamp(bits - 1 - kChannelBits - 8, 0, kHashBits);
  seq_mask_ = (std::uint32_t{1} << (bits - 1 - kChannelBits - hash_bits_)) - 1;
  // The bits that name an operation (its sequence number, and the half of the
  // tag space collectives use): a message that agrees on them but not on the
  // hash belongs to the same operation called differently.
  op_mask_ = hash_bits_ == 0 ? 0 : ((seq_mask_ << (hash_bits_ + kChannelBits)) | (std::uint32_t{1} << (bits - 1)));
  transport_ = std::move(mpi);
  // Point-to-point takes three blocks of user tags (headers, payloads, verdicts)
  // from the upper half, and failure reports the first tag of the fourth: never
  // one a collective's wait could take for a peer's differently called operation.
  if (bits - 1 < PointToPoint::kUserTagBits + 2)
    throw CollexError("collex: this MPI's tag space (MPI_TAG_UB) is too small for collex");
  watch_ = std::make_unique<FailureWatch>(
      mpi_->comm, mpi_->local, static_cast<int>(p2p_tag_base_ + (std::uint32_t{3} << PointToPoint::kUserTagBits)),
      &describe_call);
  max_user_tag_ = (1 << PointToPoint::kUserTagBits) - 1;
  p2p_ = std::make_shared<PointToPoint>(mpi_->comm, rank_, p2p_tag_base_, config_.timeout_s, config_.warn_after_s,
                                        watch_.get(), [this](const std::string& reason) { set_broken(reason); });

  // Nodes of several ranks get a shared-memory window (collective over the node:
  // every rank of it takes the same branch; all nodes agree through the allreduce).
  if (config_.transport != "mpi" && local_size_ > 1)
    window_ = ShmWindow::create(mpi_->local, slot_bytes_for(local_size_));
  if (window_) {
    window_->set_describer(&describe_call);
    window_->set_warn_after(config_.warn_after_s);
    // Ranks of other nodes wait over MPI: waits on the window hear of them through the watch.
    if (local_size_ < size_)
      window_->set_watch(watch_.get(), ranks_in_comm(mpi_->local, mpi_->comm), &running_seq_, &running_);
    set_up_copy_ways();
  }
  if (local_size_ < size_) {
    // Every node must take the hierarchical path alike: with a window that can read
    // peers (so any size runs), or as a node of one rank.
    int windows_everywhere = (window_ && window_->can_read_peers()) || local_size_ == 1 ? 1 : 0, all = 0;
    MPI_Allreduce(&windows_everywhere, &all, 1, MPI_INT, MPI_MIN, mpi_->comm);
    MPI_Comm_split(mpi_->comm, local_rank_ == 0 ? 0 : MPI_UNDEFINED, rank_, &mpi_->leaders);
    if (all && config_.transport != "mpi" && mpi_->leaders != MPI_COMM_NULL) {
      MPI_Comm_set_errhandler(mpi_->leaders, MPI_ERRORS_RETURN);
      leaders_ = std::make_unique<MpiTransport>(mpi_->leaders);
      leader_rank_ = leaders_->rank();
      leader_ranks_ = ranks_in_comm(mpi_->leaders, mpi_->comm);
    }
    hier_everywhere_ = all != 0 && config_.transport != "mpi";
    // Nodes of equal size can all-reduce a slice per local rank across nodes at
    // once (every rank on the network, not only the leaders).
    int sizes[2] = {local_size_, -local_size_}, extremes[2] = {0, 0};
    MPI_Allreduce(sizes, extremes, 2, MPI_INT, MPI_MIN, mpi_->comm);
    if (hier_everywhere_ && local_size_ > 1 && extremes[0] == -extremes[1]) {
      MPI_Comm_split(mpi_->comm, local_rank_, rank_, &mpi_->slices);
      MPI_Comm_set_errhandler(mpi_->slices, MPI_ERRORS_RETURN);
      slices_ = std::make_unique<MpiTransport>(mpi_->slices);
      slice_ranks_ = ranks_in_comm(mpi_->slices, mpi_->comm);
    }
  }
  if (config_.transport == "shm" && size_ > 1 && !window_) {
    throw CollexError("collex: COLLEX_TRANSPORT=shm, but " +
                      std::string(local_size_ == size_ ? "the shared-memory segment could not be made"
                                                       : "the ranks are not all on one node"));
  }
}

const char* Communicator::window_name() const { return window_ ? window_->name() : ""; }

// Mid-size copies are re-decided while running (CopyWays) unless
// COLLEX_MIDSIZE_COPY forces a way; without cross-memory attach only the slots
// can move them.
void Communicator::set_up_copy_ways() {
  const bool attach = window_->can_read_peers();
  if (attach && config_.midsize_copy == "auto") {
    if (config_.debug >= 1)
      std::fprintf(stderr, "collex: [rank %d] mid-size copies: timed both ways while running\n", rank_);
    return;
  }
  copy_ways_.fix(!attach || config_.midsize_copy == "slots");
  if (config_.debug >= 1)
    std::fprintf(stderr, "collex: [rank %d] mid-size copies: %s\n", rank_, copy_ways_.describe().c_str());
}

std::string Communicator::copy_ways() {
  std::string text;
  // Read on the engine's thread, which changes the ways, after queued operations.
  engine_.submit([&] { text = window_ ? copy_ways_.describe() : ""; }, /*async=*/false);
  return text;
}

std::shared_ptr<SymmetricMemory> Communicator::allocate_symmetric(std::size_t bytes) {
  std::shared_ptr<SymmetricMemory> memory;
  engine_.submit(
      [&] {
        throw_if_broken("empty");
        if (window_) memory = window_->allocate(bytes);
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
    if (window_) window_->report(Failure::kLeft, text);
    if (watch_) {
      watch_->report(Failure::kLeft, next_seq_, text);
      watch_->settle(0.2);
    }
  }
  if (p2p_) p2p_->abandon_all();
  window_.reset();
  leaders_.reset();
  slices_.reset();
  transport_.reset();
  watch_.reset();
  mpi_->release();
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
  // A receive the transport could not cancel may still land in the staging slots:
  // leave that memory to it rather than free it under its feet.
  new std::vector<char>(std::move(staging_.bytes));  // NOLINT: deliberate leak
}

std::uint32_t Communicator::collective_tag(std::uint64_t seq, int channel_block, std::uint32_t print_hash) const {
  const std::uint32_t hash = print_hash & ((std::uint32_t{1} << hash_bits_) - 1);
  return (((static_cast<std::uint32_t>(seq & seq_mask_) << hash_bits_) | hash) << kChannelBits) |
         static_cast<std::uint32_t>(channel_block);
}

CallPrint Communicator::print_of(const Call& c) {
  CallPrint p;
  p.kind = static_cast<std::uint32_t>(c.kind);
  p.dtype = static_cast<std::uint32_t>(c.in.dtype);
  p.op = reduces(c.kind) ? static_cast<std::uint32_t>(c.op) : 0;
  p.root = rooted(c.kind) ? c.root : 0;
  p.count = c.kind == Collective::kReduceScatter ? c.out.count : c.in.count;
  return p;
}

std::uint32_t Communicator::print_hash(const Call& c) const {
  const CallPrint p = print_of(c);
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a over the fields
  for (std::uint64_t v : {std::uint64_t{p.kind}, std::uint64_t{p.dtype}, std::uint64_t{p.op},
                          static_cast<std::uint64_t>(static_cast<std::uint32_t>(p.root)), p.count}) {
    for (int b = 0; b < 8; ++b) h = (h ^ ((v >> (8 * b)) & 0xff)) * 1099511628211ull;
  }
  return static_cast<std::uint32_t>(h ^ (h >> 32));
}

// What every execution shares: the average divides by the whole communicator's
// size, and every wait has the configured deadline.
ExecArgs Communicator::exec_args(void* data, DType dtype, ReduceOp op, std::uint32_t tag_base) const {
  ExecArgs a;
  a.data = data;
  a.dtype = dtype;
  a.op = op;
  a.divisor = static_cast<double>(size_);
  a.tag_base = tag_base;
  a.timeout_s = config_.timeout_s;
  a.warn_after_s = config_.warn_after_s;
  a.op_mask = op_mask_;
  a.hash_mask = ((std::uint32_t{1} << hash_bits_) - 1) << kChannelBits;
  a.watch = watch_.get();
  a.call = &running_;
  return a;
}

std::shared_ptr<Communicator> Communicator::split(int color, int key) {
  std::shared_ptr<Communicator> result;
  engine_.submit(
      [&] {
        throw_if_broken("split");
        MPI_Comm part = MPI_COMM_NULL;
        MPI_Comm_split(mpi_->comm, color < 0 ? MPI_UNDEFINED : color, key, &part);
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
  throw_if_broken(collective_name(call.kind));
  call.seq = next_seq_++;  // numbered alike on every rank
  return engine_.submit([this, call] { run(call); }, async);
}

void Communicator::run(const Call& call) {
  throw_if_broken(collective_name(call.kind));
  running_ = print_of(call);
  running_seq_ = call.seq;
  // A mismatch found by the fingerprint check is raised on every rank alike and
  // leaves the communicator usable; any failure on the wire breaks it.
  if (config_.check && size_ > 1) {
    try {
      check_fingerprints(call);
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
    if (call.before) call.before();
    run_collective(call);
    if (call.after) call.after();
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
  if (window_) window_->report(kind, e.what());
  if (!is_relayed(e)) watch_->report(kind, 0, e.what());
}

namespace {

// What the strict check (COLLEX_CHECK=1) compares: the call, and its sequence number.
struct Fingerprint {
  std::uint64_t seq = 0;
  CallPrint print{};
  bool operator==(const Fingerprint& o) const { return seq == o.seq && print == o.print; }
};

}  // namespace

void Communicator::check_fingerprints(const Call& call) {
  std::vector<Fingerprint> all(static_cast<std::size_t>(size_));
  all[static_cast<std::size_t>(rank_)] = {call.seq, print_of(call)};
  Schedule s;
  const std::size_t n = sizeof(Fingerprint) * all.size();
  ring::allgather(s, rank_, size_, n, n, 0);
  // The ring uses channel 0 only, so the check's messages get channel 7 of this operation.
  // Without the calls' hash in the tag: these messages must meet whatever the ranks called.
  ExecArgs a = exec_args(all.data(), DType::kUInt8, ReduceOp::kSum, collective_tag(call.seq, kCheckChannel, 0));
  a.op_mask = 0;
  a.call = nullptr;  // the exchange must meet whatever the ranks called
  OpLabel label{rank_, collective_name(call.kind), call.seq, "check", DType::kUInt8, n};
  execute(s, *transport_, a, label, staging_);
  bool same = true;
  for (const auto& f : all) same = same && f == all[0];
  if (same) return;
  std::ostringstream o;
  o << rank_prefix(rank_, call.kind) << "ranks issued different collectives:";
  for (const Fingerprint& f : all) {
    o << "\n  rank " << (&f - all.data()) << ": " << describe_call(f.print) << " seq=" << f.seq;
  }
  throw CollectiveMismatch(o.str());
}

bool Communicator::direct_ok(const Call& c) const {
  if (!window_ || local_size_ != size_) return false;
  return direct::supported(*window_, c.in.bytes());
}

bool Communicator::hier_ok(const Call& c) const {
  // Decided alike on every rank: nodes of one rank have no window but take part.
  if (!hier_everywhere_ || c.kind != Collective::kAllreduce) return false;
  return !window_ || direct::supported(*window_, c.in.bytes());
}

direct::Op Communicator::window_base() {
  direct::Op o;
  o.timeout_s = config_.timeout_s;
  o.scratch = &pieces_;
  o.block = &scratch_;
  return o;
}

void Communicator::begin_window_op(direct::Op& o) {
  o.epoch = ++window_epoch_;
  window_->announce(o.epoch, o.print);
}

direct::Op Communicator::window_op(const Call& c, const char* algo, ReduceOp op) {
  direct::Op o = window_base();
  o.in = c.in.data;
  o.out = c.out.data;
  o.count = c.kind == Collective::kReduceScatter ? c.out.count : c.in.count;
  o.dtype = c.in.dtype;
  o.op = op;
  o.root = c.root;
  o.print = print_of(c);
  o.label = OpLabel{rank_, collective_name(c.kind), c.seq, algo, c.in.dtype, c.in.bytes()};
  if (config_.debug >= 1) std::fprintf(stderr, "collex: %s\n", o.label.describe().c_str());
  return o;
}

// Between nodes every message costs a round trip (a rendezvous, over TCP), and
// over a TCP link 512 KiB chunks made 64 MiB all-reduces stall now and then for a
// retransmission timeout (bench/README.md): there, large blocks go in chunks of
// up to 4 MiB, at least 4 per block so that the pipeline stays full.
constexpr std::size_t kNetworkChunkBytes = 4 * 1024 * 1024;

std::size_t Communicator::chunk_elements(std::size_t block_bytes, DType dtype, bool across_nodes) const {
  std::size_t bytes = config_.chunk_bytes;
  if (across_nodes && !config_.chunk_bytes_set && bytes < kNetworkChunkBytes) {
    bytes = std::clamp(block_bytes / 4, bytes, kNetworkChunkBytes);
  }
  return std::max<std::size_t>(1, bytes / dtype_size(dtype));
}

void Communicator::ring_allreduce_across(Transport& t, const Call& c, char* data, std::size_t count, const char* algo) {
  Schedule s;
  const std::size_t es = dtype_size(c.in.dtype);
  const std::size_t chunk = chunk_elements(count * es / static_cast<std::size_t>(t.size()), c.in.dtype, true);
  ring::allreduce(s, t.rank(), t.size(), count, chunk, c.op == ReduceOp::kAvg);
  // exec_args divides an average by every rank's count, not t's: the average is over all.
  ExecArgs a = exec_args(data, c.in.dtype, pairwise_op(c.op), collective_tag(c.seq, 0, print_hash(c)));
  // The watch knows the communicator's ranks, not the leaders' or slices' numbering.
  if (&t == leaders_.get()) a.watch_ranks = &leader_ranks_;
  if (&t == slices_.get()) a.watch_ranks = &slice_ranks_;
  execute(s, t, a, OpLabel{rank_, collective_name(c.kind), c.seq, algo, c.in.dtype, c.in.bytes()}, staging_);
}

// All-reduce over several nodes: reduce to each node's leader through its window,
// all-reduce among the leaders with a ring over MPI, broadcast back through the
// window. The leaders' ring fixes one order across nodes, so every rank gets the
// same bits. Sums travel as sums; an average is divided once, by the leaders.
void Communicator::run_hierarchical(const Call& c) {
  // Large all-reduces on nodes of equal size: every local rank carries a slice.
  if (slices_ && c.in.bytes() > kSlicesMinBytes) return run_hierarchical_slices(c);
  direct::Op o = window_op(c, "hier", pairwise_op(c.op));
  o.root = 0;
  if (window_) {
    begin_window_op(o);
    direct::reduce(*window_, o);  // the result lands on the leader only
  } else if (c.out.data != c.in.data && c.in.bytes() > 0) {
    std::memcpy(c.out.data, c.in.data, c.in.bytes());  // a node of one rank is its own leader
  }
  if (leaders_) ring_allreduce_across(*leaders_, c, c.out.bytes_at(0), c.in.count, "hier");
  if (window_) {
    o.in = o.out = c.out.data;
    run_streamable(direct::Streamable::kBroadcast, o);
  }
}

// Reduce-scatter inside the node through shared memory (local rank i reduces
// block i), all-reduce of block i among the ranks of local rank i of every node
// over MPI (all blocks at once, on every rank's link), then all-gather inside
// the node: every rank moves 1/L of the data across nodes instead of the leader
// moving all of it.
void Communicator::run_hierarchical_slices(const Call& c) {
  direct::Op o = window_op(c, "hier-slices", pairwise_op(c.op));
  begin_window_op(o);
  direct::reduce_own_block(*window_, o);
  const Range mine = block_range(c.in.count, local_size_, local_rank_);
  ring_allreduce_across(*slices_, c, c.out.bytes_at(mine.offset), mine.count, "hier-slices");
  o.in = o.out = c.out.data;
  begin_window_op(o);
  direct::gather_blocks(*window_, o);
}

void Communicator::run_direct(const Call& c) {
  direct::Op o = window_op(c, "direct", c.op);
  if (c.segments) {
    o.segments = c.segments.get();
    begin_window_op(o);
    return direct::allreduce_segments(*window_, o);
  }
  switch (c.kind) {
    case Collective::kAllreduce: return run_streamable(direct::Streamable::kAllreduce, o);
    case Collective::kBroadcast: return run_streamable(direct::Streamable::kBroadcast, o);
    case Collective::kAllgather: return run_streamable(direct::Streamable::kAllgather, o);
    default: break;
  }
  begin_window_op(o);
  switch (c.kind) {
    case Collective::kReduce: return direct::reduce(*window_, o);
    case Collective::kReduceScatter: return direct::reduce_scatter(*window_, o);
    case Collective::kBarrier: return direct::barrier(*window_, o);
    default: break;
  }
}

void Communicator::run_streamable(direct::Streamable kind, direct::Op& o) {
  const std::size_t bytes = direct::midsize_bytes(*window_, kind, o);
  const CopyWays::Pick pick = copy_ways_.pick(kind, bytes);
  o.slots_limit = pick.slots_limit;
  begin_window_op(o);
  const bool timed = pick.size_class >= 0;  // small calls do not read the clock
  const auto start = timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
  switch (kind) {
    case direct::Streamable::kAllreduce: direct::allreduce(*window_, o); break;
    case direct::Streamable::kBroadcast: direct::broadcast(*window_, o); break;
    case direct::Streamable::kAllgather: direct::allgather(*window_, o); break;
  }
  if (!timed) return;
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  copy_ways_.record(pick, bytes, took.count());
  if (pick.settle) settle_copy_way(pick, o.label);
}

// Every rank takes the slowest rank's mean time each way in the window just
// ended (a small all-reduce through the window, right after the operation that
// ended it: all ranks are there at once), so that all reach the same decision.
void Communicator::settle_copy_way(const CopyWays::Pick& pick, const OpLabel& call) {
  const std::array<double, 2> mine = copy_ways_.mean(pick);
  std::array<double, 2> slowest{};
  direct::Op o = window_base();
  o.in = mine.data();
  o.out = slowest.data();
  o.count = slowest.size();
  o.dtype = DType::kFloat64;
  o.op = ReduceOp::kMax;
  // Part of the call that ended the window, and named so in a timeout.
  o.label = OpLabel{rank_, call.collective, call.seq, "direct (copy-way timings)", DType::kFloat64, sizeof slowest};
  o.print = CallPrint{static_cast<std::uint32_t>(Collective::kAllreduce), static_cast<std::uint32_t>(DType::kFloat64),
                      static_cast<std::uint32_t>(ReduceOp::kMax), 0, slowest.size()};
  begin_window_op(o);
  direct::allreduce(*window_, o);
  const std::string decision = copy_ways_.settle(pick, slowest);
  if (config_.debug >= 1 && !decision.empty())
    std::fprintf(stderr, "collex: [rank %d] mid-size copies: %s\n", rank_, decision.c_str());
}

void Communicator::run_collective(const Call& c) {
  const std::size_t esize = dtype_size(c.in.dtype);
  const std::size_t message = std::max(c.in.bytes(), c.out.bytes());
  const std::size_t chunk = chunk_elements(message / static_cast<std::size_t>(size_), c.in.dtype, local_size_ < size_);
  const bool average = c.op == ReduceOp::kAvg;
  Schedule s;
  Algo algo = Algo::kAuto;
  void* data = nullptr;
  std::uint32_t tag_base = collective_tag(c.seq, 0, print_hash(c));
  const void* input = nullptr;  // schedules read first touches from here (null: data)

  if (c.segments) {
    if (size_ > 1) run_direct(c);  // alone, the data is its own average
    return;
  }
  // Alone, every collective's result is its input.
  if (size_ == 1 && c.kind != Collective::kBarrier && c.kind != Collective::kBroadcast) {
    const std::size_t bytes = c.kind == Collective::kReduceScatter ? c.out.bytes() : c.in.bytes();
    if (c.out.data != c.in.data && bytes > 0) std::memmove(c.out.data, c.in.data, bytes);
    return;
  }

  algo = tuner_.choose(c.kind, c.in.bytes(), size_, c.algo, forced_algo_, direct_ok(c), hier_ok(c));
  if (algo == Algo::kDirect) return run_direct(c);
  if (algo == Algo::kHier) return run_hierarchical(c);

  switch (c.kind) {
    case Collective::kAllreduce: {
      data = c.out.data;
      input = c.in.data;
      if (algo == Algo::kTree) {
        tree::allreduce(s, rank_, size_, c.in.count, chunk, average);
      } else {
        ring::allreduce(s, rank_, size_, c.in.count, chunk, average);
      }
      break;
    }
    case Collective::kBroadcast: {
      data = c.in.data;
      if (algo == Algo::kTree) {
        tree::broadcast(s, rank_, size_, tree::Layout::kRotated, c.root, {0, c.in.count}, chunk);
      } else {
        ring::broadcast(s, rank_, size_, c.root, c.in.count, chunk);
      }
      break;
    }
    case Collective::kReduce: {
      const tree::Links links = tree::links(rank_, size_, tree::Layout::kRotated, c.root);
      input = c.in.data;
      if (rank_ == c.root) {
        data = c.out.data;
      } else if (links.num_children == 0) {
        data = c.in.data;  // a leaf only sends its input
      } else {
        // Interior ranks accumulate their children's values; the input stays untouched.
        scratch_.resize(c.in.bytes());
        data = scratch_.data();
      }
      tree::reduce(s, rank_, size_, tree::Layout::kRotated, c.root, {0, c.in.count}, chunk, average);
      break;
    }
    case Collective::kAllgather: {
      char* own = c.out.bytes_at(static_cast<std::size_t>(rank_) * c.in.count);
      if (own != c.in.data && c.in.count > 0) std::memmove(own, c.in.data, c.in.bytes());
      data = c.out.data;
      ring::allgather(s, rank_, size_, c.out.count, chunk);
      break;
    }
    case Collective::kReduceScatter: {
      // Partial blocks pass through a scratch buffer; the input stays untouched.
      scratch_.resize(c.in.bytes());
      data = scratch_.data();
      input = c.in.data;
      ring::reduce_scatter(s, rank_, size_, c.in.count, chunk, average);
      break;
    }
    case Collective::kBarrier: {
      static char nothing = 0;
      data = &nothing;
      barrier::dissemination(s, rank_, size_);
      break;
    }
    case Collective::kSend:
    case Collective::kRecv: throw CollexError("collex: internal error: point-to-point is not a collective");
  }

  const bool bytewise = c.kind == Collective::kBarrier;
  ExecArgs a = exec_args(data, bytewise ? DType::kUInt8 : c.in.dtype, c.op, tag_base);
  a.input = input;
  OpLabel label{rank_, collective_name(c.kind), c.seq, algo_name(algo), c.in.dtype, c.in.bytes()};
  if (c.kind == Collective::kBarrier) label.algo = "dissemination";
  if (config_.debug >= 1) std::fprintf(stderr, "collex: %s\n", label.describe().c_str());
  execute(s, *transport_, a, label, staging_);

  if (c.kind == Collective::kReduceScatter && c.out.count > 0) {
    std::memcpy(c.out.data, scratch_.data() + static_cast<std::size_t>(rank_) * c.out.bytes(), c.out.bytes());
  }
}

// ---- entry points: check what the core itself relies on, then queue ----

namespace {

void require(bool ok, int rank, Collective c, const std::string& what) {
  if (!ok) throw InvalidArgument(rank_prefix(rank, c) + what);
}

}  // namespace

std::shared_ptr<Work> Communicator::allreduce(Buffer in, Buffer out, ReduceOp op, Algo algo, bool async) {
  return allreduce_with(in, out, op, nullptr, nullptr, async, algo);
}

std::shared_ptr<Work> Communicator::allreduce_with(Buffer in, Buffer out, ReduceOp op, Hook before, Hook after,
                                                   bool async, Algo algo) {
  require(in.count == out.count && in.dtype == out.dtype, rank_, Collective::kAllreduce,
          "out must match x in size and dtype");
  require(op != ReduceOp::kAvg || dtype_is_float(in.dtype), rank_, Collective::kAllreduce,
          "op='avg' needs a floating-point dtype");
  Call c;
  c.kind = Collective::kAllreduce;
  c.in = in;
  c.out = out;
  c.op = op;
  c.algo = algo;
  c.before = std::move(before);
  c.after = std::move(after);
  return submit(std::move(c), async);
}

bool Communicator::can_reduce_segments() const {
  const bool algo_allows = forced_algo_ == Algo::kAuto || forced_algo_ == Algo::kDirect;
  return size_ == 1 || (window_ && local_size_ == size_ && window_->can_read_peers() && algo_allows);
}

std::shared_ptr<Work> Communicator::allreduce_segments(std::shared_ptr<const std::vector<Span>> segments,
                                                       std::size_t count, DType dtype, ReduceOp op, bool async) {
  require(can_reduce_segments(), rank_, Collective::kAllreduce,
          "segmented all-reduce needs every rank on one node with a shared window");
  std::size_t bytes = 0;
  for (const Span& s : *segments) bytes += s.bytes;
  require(bytes == count * dtype_size(dtype), rank_, Collective::kAllreduce, "segments do not add up to count");
  Call c;
  c.kind = Collective::kAllreduce;
  c.in = c.out = Buffer{nullptr, count, dtype};
  c.op = op;
  c.algo = Algo::kDirect;
  c.segments = std::move(segments);
  return submit(std::move(c), async);
}

std::shared_ptr<Work> Communicator::broadcast(Buffer buf, int root, Algo algo, bool async) {
  require(root >= 0 && root < size_, rank_, Collective::kBroadcast, "root out of range");
  Call c;
  c.kind = Collective::kBroadcast;
  c.in = c.out = buf;
  c.root = root;
  c.algo = algo;
  return submit(c, async);
}

std::shared_ptr<Work> Communicator::reduce(Buffer in, Buffer out, ReduceOp op, int root, bool async) {
  require(root >= 0 && root < size_, rank_, Collective::kReduce, "root out of range");
  require(in.count == out.count && in.dtype == out.dtype, rank_, Collective::kReduce,
          "out must match x in size and dtype");
  require(op != ReduceOp::kAvg || dtype_is_float(in.dtype), rank_, Collective::kReduce,
          "op='avg' needs a floating-point dtype");
  Call c;
  c.kind = Collective::kReduce;
  c.in = in;
  c.out = out;
  c.op = op;
  c.root = root;
  return submit(c, async);
}

std::shared_ptr<Work> Communicator::allgather(Buffer in, Buffer out, bool async) {
  require(out.count == in.count * static_cast<std::size_t>(size_) && in.dtype == out.dtype, rank_,
          Collective::kAllgather, "out must hold size * x.size elements of x's dtype");
  Call c;
  c.kind = Collective::kAllgather;
  c.in = in;
  c.out = out;
  return submit(c, async);
}

std::shared_ptr<Work> Communicator::reduce_scatter(Buffer in, Buffer out, ReduceOp op, bool async) {
  require(out.count * static_cast<std::size_t>(size_) == in.count && in.dtype == out.dtype, rank_,
          Collective::kReduceScatter, "x must hold size * out.size elements of out's dtype");
  require(op != ReduceOp::kAvg || dtype_is_float(in.dtype), rank_, Collective::kReduceScatter,
          "op='avg' needs a floating-point dtype");
  Call c;
  c.kind = Collective::kReduceScatter;
  c.in = in;
  c.out = out;
  c.op = op;
  return submit(c, async);
}

std::shared_ptr<Work> Communicator::barrier(bool async) {
  Call c;
  c.kind = Collective::kBarrier;
  c.in.dtype = c.out.dtype = DType::kUInt8;
  return submit(c, async);
}

void Communicator::check_p2p_args(Collective kind, int peer, int tag) const {
  const char* peer_name = kind == Collective::kSend ? "dst" : "src";
  require(peer >= 0 && peer < size_, rank_, kind, std::string(peer_name) + " out of range");
  require(tag >= 0 && tag <= max_user_tag(), rank_, kind, "tag out of range");
  throw_if_broken(collective_name(kind));
}

std::shared_ptr<P2pWork> Communicator::send(Buffer buf, const MessageShape& shape, int dst, int tag) {
  check_p2p_args(Collective::kSend, dst, tag);
  return p2p_->send(buf, shape, dst, tag);
}

std::shared_ptr<P2pWork> Communicator::recv(Buffer buf, const MessageShape& shape, int src, int tag) {
  check_p2p_args(Collective::kRecv, src, tag);
  return p2p_->recv(buf, shape, src, tag);
}

}  // namespace collex
