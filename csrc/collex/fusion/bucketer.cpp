#include "collex/fusion/bucketer.h"

#include <map>

namespace collex::fusion {

std::vector<Bucket> assign_buckets(const std::vector<Gradient>& gradients, std::size_t cap_bytes,
                                   std::size_t first_cap_bytes) {
  std::vector<Bucket> buckets;
  std::map<DType, std::size_t> open;  // dtype -> index of its open bucket
  for (std::size_t i = gradients.size(); i-- > 0;) {
    const Gradient& g = gradients[i];
    const std::size_t esize = dtype_size(g.dtype);
    auto it = open.find(g.dtype);
    if (it != open.end()) {
      const Bucket& b = buckets[it->second];
      const std::size_t cap = it->second == 0 ? first_cap_bytes : cap_bytes;
      if (!b.members.empty() && (b.count + g.count) * esize > cap) {
        open.erase(it);
        it = open.end();
      }
    }
    if (it == open.end()) {
      buckets.push_back(Bucket{g.dtype, {}, 0});
      it = open.insert_or_assign(g.dtype, buckets.size() - 1).first;
    }
    Bucket& b = buckets[it->second];
    b.members.push_back(Member{i, b.count});
    b.count += g.count;
  }
  return buckets;
}

}  // namespace collex::fusion
