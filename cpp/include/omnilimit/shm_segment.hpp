// SharedSegment: a named POSIX shared-memory segment (/dev/shm/omnilimit.NAME) that holds one
// limiter's state, so that every process opening the same name shares one budget.
//
// Layout. A Header, then the payload (a struct of lock-free atomics that the limiter defines).
// The header says what the segment is: a magic word, a layout version, the limiter kind, the
// payload's size and a fingerprint of its layout. A segment that does not match is refused with an
// error that says why, never reinterpreted. (The limits themselves are not part of it: they live
// in the payload, and a process that opens the segment with other limits applies them.)
//
// Creation without races. shm_open(O_CREAT | O_EXCL) picks exactly one creator. The creator
// reserves the memory (posix_fallocate: a full /dev/shm fails here, with ENOSPC, instead of
// killing the process with SIGBUS at its first write), maps it, builds the payload, and only
// then stores the magic word (release). Everyone else opens the existing segment and waits
// (briefly, with a deadline) for the magic word (acquire) before reading anything. A creator that
// died before finishing leaves a segment that never becomes ready: openers report it, with the
// way to remove it, instead of waiting forever.
//
// Permissions. 0600 unless the caller asks otherwise (whatever the umask): only the same user
// shares the budget. A segment found at our name that another user owns, or whose permissions
// differ from what we create, is refused (SegmentMismatch, saying whose it is): another user could
// otherwise pause our limiter, or a file squatting the name would be used as ours.
// OMNILIMIT_SHM_PREFIX (default `omnilimit.`) chooses the names' prefix, so a user can move away
// from a squatted name without an administrator (/dev/shm is sticky: only its owner can remove
// another user's file).
//
// Removal. remove(name) unlinks the name; processes that have it mapped keep using their mapping,
// and the next open creates a fresh segment. `omnilimit shm remove NAME` calls it.
#pragma once

#include <fcntl.h>
#include <pwd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

#include "omnilimit/clock.hpp"

namespace omnilimit {

// A segment that exists but cannot be used as asked (foreign, truncated, another kind or
// configuration, never initialised). The message says what to do.
class SegmentMismatch : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class SharedSegment {
 public:
  static constexpr std::uint64_t kMagic = 0x4f4d4e494c494d31ULL;  // "OMNILIM1"
  static constexpr std::uint32_t kVersion = 1;
  static constexpr Nanos kReadyWaitNs = 2 * kNanosPerSecond;

  struct Header {
    std::atomic<std::uint64_t> magic;  // kMagic once the payload is built
    std::uint32_t version;
    std::uint32_t kind;
    std::uint64_t payload_size;
    std::uint64_t fingerprint;  // of the payload's layout
    std::int64_t creator_pid;
    std::uint64_t reserved[3];
  };
  static_assert(sizeof(Header) == 64, "the header is one cache line");
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "the magic word must be lock-free");

  // Valid names: 1-200 characters from [A-Za-z0-9._-], not starting with a dot.
  static bool valid_name(const std::string& name) {
    if (name.empty() || name.size() > 200 || name[0] == '.') return false;
    for (const char c : name) {
      const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                      c == '_' || c == '-';
      if (!ok) return false;
    }
    return true;
  }
  // The prefix of every segment's name in /dev/shm: $OMNILIMIT_SHM_PREFIX, or `omnilimit.`.
  static std::string prefix() {
    const char* chosen = std::getenv("OMNILIMIT_SHM_PREFIX");
    if (chosen == nullptr || *chosen == '\0') return "omnilimit.";
    const std::string text(chosen);
    if (text.size() > 40 || !valid_name(text)) {
      throw std::invalid_argument("OMNILIMIT_SHM_PREFIX must be 1-40 characters from A-Z a-z 0-9 . _ - (not "
                                  "starting with a dot), got '" + text + "'");
    }
    return text;
  }
  static std::string path_of(const std::string& name) { return "/" + prefix() + name; }

  // Opens the segment `name`, creating it (and building its payload with `build(payload)`) if it
  // does not exist. `kind`, `payload_size` and `fingerprint` must match an existing segment.
  // Throws std::invalid_argument (bad name), SegmentMismatch, std::system_error (the OS said no:
  // no /dev/shm, no space, no permission).
  SharedSegment(const std::string& name, std::uint32_t kind, std::size_t payload_size, std::uint64_t fingerprint,
                const std::function<void(void*)>& build, mode_t mode = 0600)
      : name_(name), mode_(mode), size_(sizeof(Header) + payload_size) {
    if (!valid_name(name)) {
      throw std::invalid_argument("a shared limiter's name must be 1-200 characters from A-Z a-z 0-9 . _ - "
                                  "(not starting with a dot), got '" + name + "'");
    }
    const std::string path = path_of(name);
    try {
      for (int attempt = 0;; ++attempt) {
        const int fd = ::shm_open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        if (fd >= 0) {
          create(fd, kind, payload_size, fingerprint, build);
          return;
        }
        if (errno != EEXIST) fail("create", path);
        const int existing = ::shm_open(path.c_str(), O_RDWR | O_CLOEXEC, 0);
        if (existing >= 0) {
          attach(existing, kind, payload_size, fingerprint);
          return;
        }
        if (errno != ENOENT || attempt >= 8) fail("open", path);  // ENOENT: removed meanwhile, try again
      }
    } catch (...) {
      if (base_ != nullptr) ::munmap(base_, mapped_);  // no destructor runs for a failed constructor
      throw;
    }
  }
  ~SharedSegment() {
    if (base_ != nullptr) ::munmap(base_, mapped_);
  }
  SharedSegment(const SharedSegment&) = delete;
  SharedSegment& operator=(const SharedSegment&) = delete;

  void* payload() const noexcept { return static_cast<char*>(base_) + sizeof(Header); }
  bool created() const noexcept { return created_; }
  const std::string& name() const noexcept { return name_; }

  // Unlinks the segment `name`. False if there was none.
  static bool remove(const std::string& name) {
    if (!valid_name(name)) throw std::invalid_argument("not a shared limiter's name: '" + name + "'");
    if (::shm_unlink(path_of(name).c_str()) == 0) return true;
    if (errno == ENOENT) return false;
    fail("remove", path_of(name));
  }

 private:
  [[noreturn]] static void fail(const char* what, const std::string& path) {
    const int err = errno;
    std::string hint;
    if (err == ENOENT || err == ENOSYS) hint = " (is /dev/shm mounted?)";
    if (err == ENOSPC) hint = " (/dev/shm is full)";
    if (err == EACCES) {
      hint = " (it belongs to another user, or its permissions do not allow this one: choose another name, "
             "backend='shm://NAME', or prefix, OMNILIMIT_SHM_PREFIX)";
    }
    throw std::system_error(err, std::generic_category(),
                            std::string("cannot ") + what + " shared memory segment /dev/shm" + path + hint);
  }

  void create(int fd, std::uint32_t kind, std::size_t payload_size, std::uint64_t fingerprint,
              const std::function<void(void*)>& build) {
    const std::string path = path_of(name_);
    int err = ::fchmod(fd, mode_) == 0 ? 0 : errno;  // exactly the mode asked for, whatever the umask
    if (err == 0) err = ::posix_fallocate(fd, 0, static_cast<off_t>(size_));
    if (err != 0) {
      ::close(fd);
      ::shm_unlink(path.c_str());
      errno = err;
      fail("reserve memory for", path);
    }
    map(fd);
    try {
      auto* h = new (base_) Header{};
      h->version = kVersion;
      h->kind = kind;
      h->payload_size = payload_size;
      h->fingerprint = fingerprint;
      h->creator_pid = static_cast<std::int64_t>(::getpid());
      build(payload());
      h->magic.store(kMagic, std::memory_order_release);
    } catch (...) {
      ::shm_unlink(path.c_str());
      throw;
    }
    created_ = true;
  }

  void attach(int fd, std::uint32_t kind, std::size_t payload_size, std::uint64_t fingerprint) {
    const std::string shown = "/dev/shm" + path_of(name_);
    const std::string fix = "; remove it with `omnilimit shm remove " + name_ + "` once no process uses it";
    // The creator may not have sized it yet: wait for it, within the deadline.
    const Nanos deadline = saturating_add(now_ns(), kReadyWaitNs);
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      ::close(fd);
      fail("inspect", path_of(name_));
    }
    if (st.st_uid != ::geteuid() || (st.st_mode & 07777) != mode_) {
      ::close(fd);
      throw SegmentMismatch(shown + " " + owner_of(st) + ": it is not this user's segment as omnilimit makes them (" +
                            "owned by this user, mode 0" + octal(mode_) + "), so it is not used; choose another name " +
                            "(backend='shm://NAME') or prefix (OMNILIMIT_SHM_PREFIX), or have its owner remove it");
    }
    for (;;) {
      if (::fstat(fd, &st) != 0) {
        ::close(fd);
        fail("inspect", path_of(name_));
      }
      if (static_cast<std::uint64_t>(st.st_size) >= sizeof(Header) || now_ns() >= deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (static_cast<std::uint64_t>(st.st_size) < sizeof(Header)) {
      ::close(fd);
      throw SegmentMismatch(shown + " is truncated (" + std::to_string(st.st_size) + " bytes, not an omnilimit segment, or its creator died)" + fix);
    }
    if (static_cast<std::uint64_t>(st.st_size) != size_) {
      size_ = static_cast<std::size_t>(st.st_size);
      map(fd);
      const auto* h = static_cast<const Header*>(base_);
      if (h->magic.load(std::memory_order_acquire) != kMagic) {
        throw SegmentMismatch(shown + " is not an omnilimit segment (" + std::to_string(st.st_size) + " bytes)" + fix);
      }
      throw SegmentMismatch(shown + " has " + std::to_string(st.st_size) + " bytes where this limiter needs " +
                            std::to_string(sizeof(Header) + payload_size) +
                            " (another kind of limiter, or another omnilimit version)" + fix);
    }
    map(fd);
    const auto* h = static_cast<const Header*>(base_);
    while (h->magic.load(std::memory_order_acquire) != kMagic) {
      if (now_ns() >= deadline) {
        throw SegmentMismatch(shown + " was never initialised (not an omnilimit segment, or its creator died while "
                                      "building it)" + fix);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (h->version != kVersion || h->kind != kind || h->payload_size != payload_size) {
      throw SegmentMismatch(shown + " holds another kind of limiter, or one of another omnilimit version (kind " +
                            std::to_string(h->kind) + ", version " + std::to_string(h->version) + ")" + fix);
    }
    if (h->fingerprint != fingerprint) {
      throw SegmentMismatch(shown + " holds a limiter of another shape (kind " + std::to_string(h->kind) + ")" + fix);
    }
  }

  static std::string octal(mode_t mode) {
    char text[8];
    std::snprintf(text, sizeof text, "%o", static_cast<unsigned>(mode & 07777));
    return text;
  }
  // "belongs to user alice (uid 1001), mode 0666" / "has mode 0666"
  static std::string owner_of(const struct stat& st) {
    std::string who;
    if (st.st_uid != ::geteuid()) {
      std::string user = "uid " + std::to_string(st.st_uid);
      if (const passwd* pw = ::getpwuid(st.st_uid)) user = std::string(pw->pw_name) + " (" + user + ")";
      who = "belongs to user " + user + ", ";
    }
    return who + (who.empty() ? "has mode 0" : "mode 0") + octal(st.st_mode);
  }

  void map(int fd) {
    if (base_ != nullptr) ::munmap(base_, mapped_);
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    const int err = errno;
    if (p == MAP_FAILED) {
      ::close(fd);
      errno = err;
      fail("map", path_of(name_));
    }
    base_ = p;
    mapped_ = size_;
    ::close(fd);  // the mapping keeps the memory
  }

  std::string name_;
  mode_t mode_ = 0600;
  std::size_t size_;
  std::size_t mapped_ = 0;
  void* base_ = nullptr;
  bool created_ = false;
};

}  // namespace omnilimit
