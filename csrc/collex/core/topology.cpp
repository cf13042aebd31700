#include "collex/core/topology.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "collex/common/errors.h"
#include "collex/common/fingerprint_hash.h"
#include "collex/common/waiting.h"
#include "collex/transport/mpi/mpi_transport.h"
#include "collex/transport/shm/shm_window.h"

namespace collex {
namespace {

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

// Ranks whose protocol settings differ would take different branches below
// (one making the node's window, another not: a hang) or run different
// algorithms for the same call (a timeout, or a peer reading memory the
// other never published). One reduction compares them all: per setting, the
// least hash of its value and the least negated hash, which are each other's
// negation only if every rank has the same value. Every rank gets the same
// answer, so all of them raise, each naming its own value.
std::string settings_that_differ(MPI_Comm comm, const Config& config) {
  const auto settings = config.shared_settings();
  std::vector<std::int64_t> extremes(2 * settings.size());
  for (std::size_t i = 0; i < settings.size(); ++i) {
    const auto mine = static_cast<std::int64_t>(Fnv1a().mix(settings[i].second).value() >>
                                                1);  // non-negative, so that it can be negated
    extremes[2 * i] = mine;
    extremes[2 * i + 1] = -mine;
  }
  MPI_Allreduce(MPI_IN_PLACE, extremes.data(), static_cast<int>(extremes.size()), MPI_INT64_T, MPI_MIN, comm);
  std::string differ, names;
  for (std::size_t i = 0; i < settings.size(); ++i) {
    names += (i == 0 ? "" : ", ") + settings[i].first;
    if (extremes[2 * i] == -extremes[2 * i + 1]) continue;
    differ += (differ.empty() ? "" : ", ") + settings[i].first + " (this rank: " + settings[i].second + ")";
  }
  if (differ.empty()) return "";
  return "collex: the ranks of this communicator run with different " + differ + "; " + names +
         " must be the same on every rank";
}

// MPI_Comm_dup and the other MPI calls that make a communicator have no
// deadline: ranks that make it while another rank never does (or first calls
// something else) would wait for ever. They meet in a barrier that has one:
// after the timeout this rank raises, leaving that barrier pending on `user`
// (MPI cannot take it back; the program cannot go on correctly anyway).
void meet_before_making(MPI_Comm user, const Config& config) {
  int rank = 0, size = 1;
  MPI_Comm_rank(user, &rank);
  MPI_Comm_size(user, &size);
  if (size == 1) return;
  MPI_Request request = MPI_REQUEST_NULL;
  if (MPI_Ibarrier(user, &request) != MPI_SUCCESS) throw CollexError("collex: MPI_Ibarrier failed");
  const Deadline deadline(config.timeout_s);
  StallWarning stall(config.warn_after_s);
  Backoff backoff;
  const std::string what = "[rank " + std::to_string(rank) + "] collex.Communicator";
  for (unsigned polls = 0;; ++polls) {
    int done = 0;
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done) return;
    if ((polls & 1023) == 1023) {
      if (interrupt_requested()) throw Interrupted();
      if (stall.due()) {
        warn(what + " has waited " + seconds_text(stall.after_s()) +
             " (COLLEX_WARN_AFTER) for the other ranks to make the communicator too");
      }
      if (deadline.expired()) {
        throw CollectiveTimeout(what + ": not every rank of the communicator came to make it within " +
                                seconds_text(config.timeout_s) +
                                " (the timeout): every rank makes it, at the same point of its program");
      }
    }
    backoff.pause();
  }
}

}  // namespace

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

Topology::Topology(MPI_Comm user, const Config& config) {
  meet_before_making(user, config);
  if (MPI_Comm_dup(user, &comm) != MPI_SUCCESS) throw CollexError("collex: MPI_Comm_dup failed");
  MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  if (const std::string why = settings_that_differ(comm, config); !why.empty()) {
    MPI_Comm_free(&comm);
    throw InvalidArgument(why);
  }
  if (config.node_size > 0) {
    // Pretend nodes of node_size consecutive ranks, to test multi-node paths on one machine.
    MPI_Comm_split(comm, rank / config.node_size, rank, &local);
  } else {
    MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &local);
  }
  MPI_Comm_rank(local, &local_rank);
  MPI_Comm_size(local, &local_size);
  node_leader = rank;
  MPI_Bcast(&node_leader, 1, MPI_INT, 0, local);
  max_local_size = local_size;
  world = std::make_unique<MpiTransport>(comm);
}

Topology::~Topology() {
  close();
  release_mpi();
}

void Topology::connect(const Config& config) {
  // Nodes of several ranks get a shared-memory window (collective over the node:
  // every rank of it takes the same branch; all nodes agree through the allreduce).
  if (config.transport != "mpi" && local_size > 1) window = ShmWindow::create(local, slot_bytes_for(local_size));
  if (local_size < size) {
    // Every node must take the hierarchical path alike: with a window that can read
    // peers (so any size runs), or as a node of one rank. The same reduction
    // finds the smallest and largest node; the next counts the nodes.
    int mine[3] = {(window && window->can_read_peers()) || local_size == 1 ? 1 : 0, local_size, -local_size};
    int least[3] = {0, 0, 0};
    MPI_Allreduce(mine, least, 3, MPI_INT, MPI_MIN, comm);
    int leaders_count = 0, one = local_rank == 0 ? 1 : 0;
    MPI_Allreduce(&one, &leaders_count, 1, MPI_INT, MPI_SUM, comm);
    nodes = leaders_count;
    max_local_size = -least[2];
    const bool all = least[0] != 0;
    MPI_Comm_split(comm, local_rank == 0 ? 0 : MPI_UNDEFINED, rank, &leaders);
    if (all && config.transport != "mpi" && leaders != MPI_COMM_NULL) {
      MPI_Comm_set_errhandler(leaders, MPI_ERRORS_RETURN);
      leader_transport = std::make_unique<MpiTransport>(leaders);
      leader_ranks = ranks_in_comm(leaders, comm);
    }
    hier_everywhere = all && config.transport != "mpi";
    // Nodes of equal size can all-reduce a slice per local rank across nodes at
    // once (every rank on the network, not only the leaders).
    if (hier_everywhere && local_size > 1 && least[1] == -least[2]) {
      MPI_Comm_split(comm, local_rank, rank, &slices);
      MPI_Comm_set_errhandler(slices, MPI_ERRORS_RETURN);
      slice_transport = std::make_unique<MpiTransport>(slices);
      slice_ranks = ranks_in_comm(slices, comm);
    }
  }
  if (config.transport == "shm" && size > 1 && !window) {
    throw CollexError("collex: COLLEX_TRANSPORT=shm, but " +
                      std::string(local_size == size ? "the shared-memory segment could not be made"
                                                     : "the ranks are not all on one node"));
  }
}

void Topology::close() {
  window.reset();
  leader_transport.reset();
  slice_transport.reset();
  world.reset();
}

void Topology::release_mpi() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;  // MPI already reclaimed everything
  if (leaders != MPI_COMM_NULL) MPI_Comm_free(&leaders);
  if (slices != MPI_COMM_NULL) MPI_Comm_free(&slices);
  if (local != MPI_COMM_NULL) MPI_Comm_free(&local);
  if (comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
}

}  // namespace collex
