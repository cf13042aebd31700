// A communicator's ranks and the ways they reach each other: collex's private
// duplicate of the user's MPI communicator and its transport, the ranks sharing
// this node and their shared-memory window, and across nodes the node leaders
// and the slices (local rank i of every node). Built collectively over the
// user's communicator; every rank takes the same branches.
#pragma once

#include <mpi.h>

#include <memory>
#include <vector>

#include "collex/common/config.h"

namespace collex {

class Transport;
class ShmWindow;

class Topology {
 public:
  // Duplicates `user` and finds the node's ranks (COLLEX_NODE_SIZE pretends nodes).
  Topology(MPI_Comm user, const Config& config);
  ~Topology();
  Topology(const Topology&) = delete;
  Topology& operator=(const Topology&) = delete;

  // Collective: the node's window (unless COLLEX_TRANSPORT=mpi or the node has
  // one rank), then, on several nodes, the leaders and slices.
  void connect(const Config& config);

  // Drops the transports and the window (the engine has stopped), then the MPI objects.
  void close();
  void release_mpi();

  MPI_Comm comm = MPI_COMM_NULL;     // collex's private duplicate
  MPI_Comm local = MPI_COMM_NULL;    // the ranks sharing this node
  MPI_Comm leaders = MPI_COMM_NULL;  // local rank 0 of every node (null elsewhere)
  MPI_Comm slices = MPI_COMM_NULL;   // the ranks of the same local rank, one per node

  int rank = 0, size = 1, local_rank = 0, local_size = 1;
  int node_leader = 0;  // the rank in comm of this node's local rank 0: the same on every rank of a node
  int nodes = 1, max_local_size = 1;
  std::unique_ptr<Transport> world;             // every rank, over MPI
  std::unique_ptr<ShmWindow> window;            // this node, when it has several ranks
  std::unique_ptr<Transport> leader_transport;  // null off the leaders, or without the hierarchical path
  std::unique_ptr<Transport> slice_transport;   // null unless nodes are of equal size
  std::vector<int> leader_ranks;                // each leader's rank in comm
  std::vector<int> slice_ranks;                 // each slice member's rank in comm
  bool hier_everywhere = false;                 // every node can run the hierarchical path
};

// Rank i of `part` is rank result[i] of `whole` (part's ranks all belong to whole).
std::vector<int> ranks_in_comm(MPI_Comm part, MPI_Comm whole);

}  // namespace collex
