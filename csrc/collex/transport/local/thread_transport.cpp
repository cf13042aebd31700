#include "collex/transport/local/thread_transport.h"

#include <cstring>
#include <string>

#include "collex/common/errors.h"

namespace collex {

Request ThreadTransport::isend(int peer, const void* data, std::size_t bytes, std::uint32_t tag) {
  const char* from = static_cast<const char*>(data);
  LocalFabric::Message m{rank_, tag, std::vector<char>(from, from + bytes)};
  std::lock_guard<std::mutex> lock(fabric_->mutex_);
  fabric_->inboxes_[static_cast<std::size_t>(peer)].push_back(std::move(m));
  return Request{0, peer, false};  // buffered: already complete
}

Request ThreadTransport::irecv(int peer, void* data, std::size_t bytes, std::uint32_t tag) {
  // Handles index receives_: start it afresh once no receive is pending.
  bool pending = false;
  for (const Posted& r : receives_) pending = pending || r.active;
  if (!pending) receives_.clear();
  receives_.push_back(Posted{peer, tag, static_cast<char*>(data), bytes, posted_++, true});
  return Request{receives_.size(), peer, true};
}

bool ThreadTransport::test(Request& req) {
  if (!req.active) return true;
  Posted& r = receives_[req.handle - 1];
  // An earlier receive of the same sender and tag takes the earlier message.
  for (const Posted& other : receives_)
    if (other.active && other.from == r.from && other.tag == r.tag && other.order < r.order) return false;
  std::lock_guard<std::mutex> lock(fabric_->mutex_);
  auto& inbox = fabric_->inboxes_[static_cast<std::size_t>(rank_)];
  for (auto it = inbox.begin(); it != inbox.end(); ++it) {
    if (it->from != r.from || it->tag != r.tag) continue;
    if (it->bytes.size() > r.bytes)
      throw CollexError("collex: message of " + std::to_string(it->bytes.size()) + " bytes from rank " +
                        std::to_string(r.from) + " is longer than the " + std::to_string(r.bytes) + " expected");
    if (!it->bytes.empty()) std::memcpy(r.data, it->bytes.data(), it->bytes.size());
    inbox.erase(it);
    r.active = false;
    req.active = false;
    return true;
  }
  return false;
}

void ThreadTransport::abandon(Request& req) {
  if (req.active) receives_[req.handle - 1].active = false;
  req.active = false;
}

}  // namespace collex
