// How a communicator's MPI tag space is laid out. The lower half carries
// collectives: a sequence number, then a hash of the call, then a channel; the
// upper half carries point-to-point messages (the user's tag) and failure
// reports. Messages of ranks that called differently then never match, and a
// rank left waiting finds the other call's message pending.
#pragma once

#include <algorithm>
#include <cstdint>

namespace collex {

class TagSpace {
 public:
  // Schedules use channels 0-3 of an operation; the fingerprint check channel 7.
  static constexpr int kChannelBits = 3;
  static constexpr int kCheckChannel = 7;
  // Bits of the call's hash a collective tag carries, at most.
  static constexpr int kHashBits = 12;

  TagSpace() = default;
  // `max_tag`: the MPI's MPI_TAG_UB.
  explicit TagSpace(std::uint32_t max_tag) {
    while (bits_ < 31 && (std::uint64_t{1} << (bits_ + 1)) - 1 <= max_tag) ++bits_;
    // At least 8 bits of sequence number; what the tag space leaves beyond that
    // carries the call's hash (none on an MPI of the minimum tag space).
    hash_bits_ = std::clamp(bits_ - 1 - kChannelBits - 8, 0, kHashBits);
    seq_mask_ = (std::uint32_t{1} << (bits_ - 1 - kChannelBits - hash_bits_)) - 1;
    // The bits that name an operation (its sequence number, and the half of the
    // tag space collectives use): a message that agrees on them but not on the
    // hash belongs to the same operation called differently.
    op_mask_ = hash_bits_ == 0 ? 0 : ((seq_mask_ << (hash_bits_ + kChannelBits)) | upper_half());
  }

  // Tag bits in all (MPI_TAG_UB = 2^bits - 1 at least).
  int bits() const { return bits_; }
  // The first tag of the upper half.
  std::uint32_t upper_half() const { return std::uint32_t{1} << (bits_ - 1); }

  // The base tag of operation `seq`'s messages on `channel`, with the call's hash.
  std::uint32_t collective(std::uint64_t seq, int channel, std::uint32_t call_hash) const {
    const std::uint32_t hash = call_hash & ((std::uint32_t{1} << hash_bits_) - 1);
    return (((static_cast<std::uint32_t>(seq & seq_mask_) << hash_bits_) | hash) << kChannelBits) |
           static_cast<std::uint32_t>(channel);
  }
  std::uint32_t op_mask() const { return op_mask_; }
  std::uint32_t hash_mask() const { return ((std::uint32_t{1} << hash_bits_) - 1) << kChannelBits; }

 private:
  int bits_ = 0;
  int hash_bits_ = 0;
  std::uint32_t seq_mask_ = 0;
  std::uint32_t op_mask_ = 0;
};

}  // namespace collex
