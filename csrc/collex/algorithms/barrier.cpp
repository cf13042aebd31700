#include "collex/algorithms/barrier.h"

namespace collex::barrier {

void dissemination(Schedule& s, int rank, int size) {
  int round = 0;
  for (int dist = 1; dist < size; dist *= 2, ++round) {
    s.send((rank + dist) % size, 0, 0, round, round & 3);
    s.recv_copy((rank - dist + size) % size, 0, 0, round, round & 3);
  }
  s.rounds = round;
}

}  // namespace collex::barrier
