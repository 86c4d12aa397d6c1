// SegmentView: a shared limiter's segment mapped read-only, for the tools that watch limiters
// without taking part (`omnilimit top`).
//
// Opening a segment the ordinary way (SharedSegment) applies the opener's limits to every
// process; a view cannot change anything: the file is opened O_RDONLY and mapped PROT_READ, so a
// stray write faults instead of corrupting a live limiter. Only lock-free 64-bit atomic loads are
// done on it (plain loads on the platforms we build for). The same refusals as SharedSegment: a
// segment another user owns, one too short for its header, one not yet built (no magic word), or of
// another layout version, is reported (SegmentMismatch) and not read.
//
// Thread-safety: a view is immutable once made; reads from any thread.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <system_error>

#include "omnilimit/shm_segment.hpp"

namespace omnilimit {

class SegmentView {
 public:
  // Maps the segment `name` (without the prefix). Throws std::invalid_argument for a bad name,
  // std::system_error when it cannot be opened (ENOENT: no such segment), SegmentMismatch for a
  // segment that is not a usable omnilimit segment of this version.
  explicit SegmentView(const std::string& name) {
    if (!SharedSegment::valid_name(name)) throw std::invalid_argument("not a shared limiter's name: '" + name + "'");
    const std::string path = SharedSegment::path_of(name);
    const int fd = ::shm_open(path.c_str(), O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "cannot open " + path);
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int error = errno;
      ::close(fd);
      throw std::system_error(error, std::generic_category(), "cannot stat " + path);
    }
    if (st.st_uid != ::geteuid()) {
      ::close(fd);
      throw SegmentMismatch(path + " belongs to another user (uid " + std::to_string(st.st_uid) + "): not read");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ < sizeof(SharedSegment::Header)) {
      ::close(fd);
      throw SegmentMismatch(path + " is too short for a segment (" + std::to_string(size_) + " bytes)");
    }
    void* at = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
    const int error = errno;
    ::close(fd);
    if (at == MAP_FAILED) throw std::system_error(error, std::generic_category(), "cannot map " + path);
    base_ = at;
    const auto* h = header();
    if (h->magic.load(std::memory_order_acquire) != SharedSegment::kMagic) {
      unmap();
      throw SegmentMismatch(path + " is not built (yet): no omnilimit magic word");
    }
    if (h->version != SharedSegment::kVersion || sizeof(SharedSegment::Header) + h->payload_size > size_) {
      unmap();
      throw SegmentMismatch(path + " has another layout version (" + std::to_string(h->version) + ")");
    }
  }
  SegmentView(const SegmentView&) = delete;
  SegmentView& operator=(const SegmentView&) = delete;
  ~SegmentView() { unmap(); }

  const SharedSegment::Header* header() const noexcept { return static_cast<const SharedSegment::Header*>(base_); }
  std::uint32_t kind() const noexcept { return header()->kind; }
  // The payload as a `T`, when the segment's payload is exactly a `T` of layout `fingerprint`
  // (else nullptr: another kind or version of omnilimit made it).
  template <class T>
  const T* payload_as(std::uint64_t fingerprint) const noexcept {
    const auto* h = header();
    if (h->payload_size != sizeof(T) || h->fingerprint != fingerprint) return nullptr;
    return reinterpret_cast<const T*>(static_cast<const char*>(base_) + sizeof(SharedSegment::Header));
  }

 private:
  void unmap() noexcept {
    if (base_ != nullptr) ::munmap(base_, size_);
    base_ = nullptr;
  }
  void* base_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace omnilimit
