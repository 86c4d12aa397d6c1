// Processes, as the owners of shared state: who is alive, and who is who.
//
// A pid alone does not name a process for long: once it exits, the kernel hands the number to
// the next process, which kill(pid, 0) then finds alive. So a process is named by its pid and its
// start time (clock ticks since boot, /proc/PID/stat field 22): a reused pid has another start
// time. A lock word that must say who holds it (so that a holder that died can be taken over)
// packs both into one 64-bit value, ProcessWord.
//
// Thread-safety: every function is safe from any thread; each reads /proc or calls kill().
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace omnilimit {

inline std::int64_t current_pid() noexcept { return static_cast<std::int64_t>(::getpid()); }

// False only when no process `pid` exists (kill(pid, 0) fails with ESRCH).
inline bool process_alive(std::int64_t pid) noexcept {
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH;
}

// The start time of process `pid` (clock ticks since boot, /proc/PID/stat field 22), or -1 if it
// does not exist (or /proc cannot tell).
inline std::int64_t process_start_time(std::int64_t pid) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%lld/stat", static_cast<long long>(pid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[1024];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return -1;
  buf[n] = '\0';
  const char* p = std::strrchr(buf, ')');  // the command name may hold spaces and parentheses
  if (p == nullptr) return -1;
  // After ") " come fields 3..: state, ppid, ..., starttime is field 22, i.e. the 20th after ')'.
  int field = 2;
  for (++p; *p != '\0'; ++p) {
    if (*p == ' ') {
      ++field;
      if (field == 22) return std::strtoll(p + 1, nullptr, 10);
    }
  }
  return -1;
}

// The state of process `pid` (/proc/PID/stat field 3: R running, S sleeping, T stopped, Z zombie,
// ...), or 0 when it does not exist or /proc cannot tell.
inline char process_state(std::int64_t pid) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%lld/stat", static_cast<long long>(pid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[1024];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  const char* p = std::strrchr(buf, ')');  // the command name may hold spaces and parentheses
  return p != nullptr && p[1] == ' ' ? p[2] : 0;
}
// Stopped: SIGSTOP, a debugger, the cgroup freezer.
inline bool process_stopped(std::int64_t pid) noexcept {
  const char state = process_state(pid);
  return state == 'T' || state == 't';
}
// A zombie has died and waits for its parent to reap it: it runs no more.
inline bool process_dead(std::int64_t pid) noexcept {
  const char state = process_state(pid);
  return state == 'Z' || state == 'X';
}

// The process (pid, start time) is still the one that was recorded: alive, and not a newer process
// that was given the same pid. Without /proc, kill() alone decides.
inline bool same_process_alive(std::int64_t pid, std::int64_t start_time) noexcept {
  if (!process_alive(pid) || process_dead(pid)) return false;
  const std::int64_t now_start = process_start_time(pid);
  return now_start < 0 || start_time < 0 || now_start == start_time;
}

// A process as one 64-bit word: the pid in the low 22 bits (Linux's pid_max is at most 2**22),
// the start time in the 41 bits above (clock ticks: centuries at 100 per second). 0 means nobody.
struct ProcessWord {
  static constexpr int kPidBits = 22;
  static constexpr std::int64_t kPidMask = (std::int64_t{1} << kPidBits) - 1;
  static constexpr std::int64_t kStartMask = (std::int64_t{1} << 41) - 1;

  // The calling process's word (read anew each time: a forked child is another process).
  static std::int64_t mine() noexcept {
    const std::int64_t pid = current_pid();
    const std::int64_t start = process_start_time(pid);
    return ((start < 0 ? 0 : start & kStartMask) << kPidBits) | (pid & kPidMask);
  }
  // Whether the process a word names has died (or its pid now names another process). A word
  // without a start time (written by a process without /proc) is judged by its pid alone.
  static bool gone(std::int64_t word) noexcept {
    const std::int64_t pid = word & kPidMask;
    const std::int64_t start = (word >> kPidBits) & kStartMask;
    if (pid == 0) return false;
    if (!process_alive(pid) || process_dead(pid)) return true;
    if (start == 0) return false;
    const std::int64_t now_start = process_start_time(pid);
    return now_start >= 0 && (now_start & kStartMask) != start;
  }
  static bool stopped(std::int64_t word) noexcept { return process_stopped(word & kPidMask); }
};

// A lock word shared between processes, holding the ProcessWord of its holder (0: free), for
// changes that take a few ns: takers spin. A holder killed in the middle of its change (kill -9)
// would hold it forever, so a taker that has spun a while looks whether the holder is gone and
// takes the lock over, first ending the half-done change (`end_half_done`, the caller's: e.g. a
// sequence counter left odd goes even again).
class OwnerLock {
 public:
  template <class EndHalfDone>
  OwnerLock(std::atomic<std::int64_t>& word, EndHalfDone&& end_half_done) : word_(word) {
    const std::int64_t me = ProcessWord::mine();
    for (std::uint32_t spins = 0;; ++spins) {
      std::int64_t owner = 0;
      if (word_.compare_exchange_weak(owner, me, std::memory_order_acquire, std::memory_order_relaxed)) return;
      if ((spins & 0xfffU) == 0xfffU && take_over(word_, owner, me, end_half_done)) return;
      std::this_thread::yield();
    }
  }
  ~OwnerLock() { word_.store(0, std::memory_order_release); }
  OwnerLock(const OwnerLock&) = delete;
  OwnerLock& operator=(const OwnerLock&) = delete;

  // For a reader stuck on a half-done change: if the holder's process is gone, end its change
  // and free the lock.
  template <class EndHalfDone>
  static void recover(std::atomic<std::int64_t>& word, EndHalfDone&& end_half_done) {
    const std::int64_t owner = word.load(std::memory_order_acquire);
    if (owner != 0 && take_over(word, owner, ProcessWord::mine(), end_half_done)) {
      word.store(0, std::memory_order_release);
    }
  }

 private:
  template <class EndHalfDone>
  static bool take_over(std::atomic<std::int64_t>& word, std::int64_t owner, std::int64_t me,
                        EndHalfDone& end_half_done) {
    if (owner == 0 || owner == me || !ProcessWord::gone(owner)) return false;
    if (!word.compare_exchange_strong(owner, me, std::memory_order_acquire)) return false;
    end_half_done();
    return true;
  }

  std::atomic<std::int64_t>& word_;
};

}  // namespace omnilimit
