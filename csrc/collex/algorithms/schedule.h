// A schedule is one rank's part of a collective as a list of chunk steps in a
// fixed order: send a range, receive a range and reduce it in, receive a range
// into place, divide a range (avg). Steps index the operation's working buffer;
// a step marked `from_input` reads the range from the caller's input instead
// (a send of data not yet touched, or a reduction that is the range's first and
// writes input OP message into the working buffer), so that out-of-place
// operations need no copy of the input before they start. Algorithms only build schedules (pure
// functions of rank, size and counts, testable without any I/O); the executor
// runs them on a transport. Every rank orders its steps consistently with its
// peers', which is what keeps pipelined execution free of deadlock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace collex {

enum class StepKind : std::uint8_t { kSend, kRecvReduce, kRecvCopy, kDivide };

struct Step {
  StepKind kind;
  std::uint8_t channel;  // message stream (0-3): matching is per (peer, channel)
  bool from_input;       // kSend, kRecvReduce: read the range from the input
  std::uint16_t round;   // the algorithm's step number, for error messages
  int peer;              // -1 for kDivide
  std::size_t offset;    // in elements, into the operation's working buffer
  std::size_t count;     // in elements; 0 is a legal (empty) message
};

struct Schedule {
  std::vector<Step> steps;
  std::size_t max_recv_count = 0;  // largest kRecvReduce, sizes the staging slots
  int rounds = 0;                  // total algorithm steps, for error messages

  void send(int peer, std::size_t offset, std::size_t count, int round, int channel = 0, bool from_input = false);
  void recv_reduce(int peer, std::size_t offset, std::size_t count, int round, int channel = 0,
                   bool from_input = false);
  void recv_copy(int peer, std::size_t offset, std::size_t count, int round, int channel = 0);
  void divide(std::size_t offset, std::size_t count, int round);
};

// An element range [offset, offset + count).
struct Range {
  std::size_t offset = 0;
  std::size_t count = 0;
};

// Block b of `count` elements split as evenly as possible into `parts` blocks
// (the first count % parts blocks hold one element more).
Range block_range(std::size_t count, int parts, int b);

// The number of chunks of at most `chunk` elements that cover `count` elements.
std::size_t chunk_count(std::size_t count, std::size_t chunk);

// Chunk c of a range cut into pieces of at most `chunk` elements.
Range chunk_of(Range r, std::size_t chunk, std::size_t c);

}  // namespace collex
