#include "collex/transport/shm/process_maps.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

namespace collex::shm {

namespace {

// The mappings of /proc/self/maps that `keep(perms, inode, name)` accepts, adjacent ones joined.
template <typename Keep>
std::vector<AddressRange> mappings(Keep keep) {
  std::vector<AddressRange> ranges;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    unsigned long begin = 0, end = 0, inode = 0;
    char perms[8] = {};
    int name_at = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx %7s %*s %*s %lu %n", &begin, &end, perms, &inode, &name_at) < 4) continue;
    const std::string name = name_at > 0 ? line.substr(static_cast<std::size_t>(name_at)) : "";
    if (!keep(perms, inode, name)) continue;
    if (!ranges.empty() && ranges.back().end == begin) {
      ranges.back().end = end;
    } else {
      ranges.push_back(AddressRange{begin, end});
    }
  }
  return ranges;
}

}  // namespace

std::vector<AddressRange> anonymous_ranges() {
  return mappings([](const char* perms, unsigned long inode, const std::string& name) {
    const bool anonymous = inode == 0 && (name.empty() || name == "[heap]");
    return anonymous && std::strncmp(perms, "rw", 2) == 0 && perms[3] == 'p';
  });
}

std::vector<AddressRange> ranges_of_inode(std::uint64_t inode) {
  return mappings([inode](const char*, unsigned long i, const std::string&) { return i == inode; });
}

bool inside(const std::vector<AddressRange>& ranges, std::uintptr_t begin, std::uintptr_t end) {
  auto after = std::upper_bound(ranges.begin(), ranges.end(), begin,
                                [](std::uintptr_t a, const AddressRange& r) { return a < r.begin; });
  if (after == ranges.begin()) return false;
  const AddressRange& r = *(after - 1);
  return r.begin <= begin && end <= r.end;
}

}  // namespace collex::shm
