// SharedSemaphore: a counting semaphore whose state lives in a shared-memory segment, for
// processes that share one concurrency cap (rate_limit_backend: shm).
//
// Decisions happen under one process-shared, robust mutex in the segment. A caller that finds a
// free slot (and nobody queued) takes it; one that must wait takes a numbered entry in the
// segment's waiter table and sleeps on a futex word in that entry, which a release sets to
// "granted" (handing its slot straight over, oldest entry first, so nobody barges) and wakes.
// Futexes work across processes on shared mappings: waiters are woken, not polled.
//
// A peer may stop while it holds the mutex (SIGSTOP: a debugger, `docker pause`, the cgroup
// freezer) and resume minutes later; robust mutexes help only when the holder dies. So nothing
// waits for the mutex without a deadline of its own choosing: every call that takes it says until
// when (`lock_until`: kTryLock for one try, an instant, or kForever) and answers `busy` when it
// could not have it by then. The bindings try once with Python's GIL held, then wait with the GIL
// released, in slices, until the caller's deadline. What needs no decision needs no mutex: a
// waiter leaves the queue (cancel) and takes a granted slot (claim) by a compare-and-swap on its
// futex word, which the granter also changes by compare-and-swap; the figures (max, held, queued)
// are atomics that the mutex holder writes and anyone reads.
//
// Holders. Slots are recorded per holding process, as (pid, process start time): the start time
// tells a reused pid from the process that held the slots. A process that dies holding slots (kill
// -9) cannot release them; the next caller that has to wait scans the table (at most every
// kReclaimSpacingNs), finds the holder gone and takes its slots back (and hands them on). Waiters
// also wake every kReclaimCheckNs to scan, so slots come back within that bound even when nobody
// new arrives. A waiter that dies in the
// queue is skipped when its turn comes. The number of slots held is derived from the table, so a
// process that dies inside the mutex (the robust mutex reports it: EOWNERDEAD) leaves nothing
// inconsistent: the next owner recounts.
//
// The semaphore counts slots per process; which thread of a process holds them is the bindings'
// business (their per-thread account still applies).
#pragma once

#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>

#include "omnilimit/clock.hpp"
#include "omnilimit/process.hpp"
#include "omnilimit/shm_mutex.hpp"

namespace omnilimit {

class SharedSemaphore {
 public:
  static constexpr int kMaxProcesses = 256;  // distinct processes holding slots at once
  static constexpr int kMaxWaiters = 1024;   // callers queued at once, over every process
  static constexpr Nanos kReclaimCheckNs = 500'000'000;
  // Looking for dead holders reads /proc for each holding process: at most once per this interval
  // (under contention every queued caller would otherwise pay it, inside the mutex).
  static constexpr Nanos kReclaimSpacingNs = 50'000'000;
  static constexpr Nanos kTryLock = 0;  // a `lock_until` that tries the mutex once

  struct Holder {
    std::int64_t pid;
    std::int64_t start_time;
    std::int64_t slots;
  };
  struct WaiterEntry {
    std::int64_t pid;  // 0: free entry (written under the mutex)
    std::int64_t start_time;
    std::uint64_t ticket;
    std::atomic<std::uint32_t> state;  // the futex word: kWaiting -> kGranted -> kClaimed, or kWaiting -> kCancelled
  };
  // An entry's life. Only its waiter moves it to kCancelled or kClaimed; only the mutex holder to
  // kGranted, and it frees (pid 0) the entries left kCancelled or kClaimed.
  enum : std::uint32_t { kWaiting = 1, kGranted = 2, kCancelled = 3, kClaimed = 4 };

  // The state in the segment, built in place by the segment's creator (init()).
  struct State {
    pthread_mutex_t mutex;
    std::atomic<std::int64_t> max_slots;  // written under the mutex, read by anyone
    std::atomic<std::int64_t> held;       // likewise
    std::uint64_t next_ticket;
    std::atomic<std::int64_t> queued;  // entries in kWaiting; a waiter that cancels takes itself off
    std::atomic<Nanos> last_reclaim_ns;
    std::atomic<std::int64_t> over_releases;
    Holder holders[kMaxProcesses];
    WaiterEntry waiters[kMaxWaiters];
  };
  static constexpr std::uint64_t kLayout = 2;  // the segment's layout fingerprint: 2 = atomics, cancel by CAS

  static void init(State& s, std::int64_t max_slots) {
    init_robust_mutex(s.mutex);
    s.max_slots.store(max_slots);
    s.held.store(0);
    s.next_ticket = 1;
    s.queued.store(0);
    s.last_reclaim_ns.store(0);
    s.over_releases.store(0);
    for (Holder& h : s.holders) h = Holder{0, 0, 0};
    for (WaiterEntry& w : s.waiters) {
      w.pid = 0;
      w.start_time = 0;
      w.ticket = 0;
      w.state.store(0);
    }
  }

  explicit SharedSemaphore(State& state) : s_(state), me_(current_pid()), my_start_(process_start_time(me_)) {}

  // In the child of fork(): it is another process, which holds nothing yet.
  void reinit_after_fork() {
    me_ = current_pid();
    my_start_ = process_start_time(me_);
    mine_ = nullptr;
  }

  // Where a caller stands: a slot taken at once, queued (*entry: its waiter entry), or `busy`: the
  // mutex was not had by `lock_until` (nothing done).
  enum class Enqueued { acquired, queued, busy };

  // Takes a free slot (nobody queued), or queues the caller.
  Enqueued enqueue(int* entry, Nanos lock_until = kForever) {
    Locked lock(*this, lock_until);
    if (!lock) return Enqueued::busy;
    if (free_now()) {
      take_slot_for(me_, my_start_);
      return Enqueued::acquired;
    }
    reclaim_dead();
    if (free_now()) {
      take_slot_for(me_, my_start_);
      return Enqueued::acquired;
    }
    for (int i = 0; i < kMaxWaiters; ++i) {
      WaiterEntry& w = s_.waiters[i];
      tidy(w);
      if (w.pid != 0) continue;
      w.pid = me_;
      w.start_time = my_start_;
      w.ticket = s_.next_ticket++;
      w.state.store(kWaiting, std::memory_order_release);
      s_.queued.fetch_add(1);
      *entry = i;
      return Enqueued::queued;
    }
    throw std::runtime_error("a shared limiter's queue is full (" + std::to_string(kMaxWaiters) + " waiters)");
  }

  // A free slot now, or nothing (never queues, and never waits for the mutex: a mutex held by
  // someone else is a no). A full semaphore is first checked for holders that died, so that
  // polling with tries gets their slots back too.
  bool try_acquire() {
    Locked lock(*this, kTryLock);
    if (!lock) return false;
    if (s_.queued.load() == 0 && s_.held.load() >= s_.max_slots.load()) reclaim_dead();
    if (!free_now()) return false;
    take_slot_for(me_, my_start_);
    return true;
  }

  // Sleeps until entry `i` is granted a slot (true) or `until_ns` passes, or `stop` is set and
  // wake_all() called (false: still queued). Wakes every kReclaimCheckNs to take back the slots
  // of holders that died (if the mutex is free then: it never waits for it).
  bool wait(int i, Nanos until_ns, const std::atomic<bool>* stop = nullptr) {
    WaiterEntry& w = s_.waiters[i];
    for (;;) {
      if (w.state.load(std::memory_order_acquire) == kGranted) return true;
      if (stop != nullptr && stop->load()) return false;
      const Nanos now = now_ns();
      if (now >= until_ns) return false;
      const Nanos slice = std::min(until_ns - now, kReclaimCheckNs);
      timespec ts{static_cast<time_t>(slice / kNanosPerSecond), static_cast<long>(slice % kNanosPerSecond)};
      syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&w.state), FUTEX_WAIT, kWaiting, &ts, nullptr, 0);
      if (w.state.load(std::memory_order_acquire) == kGranted) return true;
      // Nobody woke it for a while: look for holders that died (whatever the caller's slices).
      if (now_ns() - s_.last_reclaim_ns.load(std::memory_order_relaxed) >= kReclaimCheckNs) {
        Locked lock(*this, kTryLock);
        if (lock) reclaim_dead();
      }
    }
  }

  // Wakes every queued caller of every process (a spurious wake-up for all but those whose stop
  // flag is set: this process's close()). Takes no lock.
  void wake_all() noexcept {
    for (WaiterEntry& w : s_.waiters) {
      syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&w.state), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
    }
  }

  // Leaves the queue, without the mutex. True when a slot was granted before it could: the caller
  // holds it now (its entry is claimed).
  bool cancel(int i) {
    WaiterEntry& w = s_.waiters[i];
    std::uint32_t expected = kWaiting;
    if (w.state.compare_exchange_strong(expected, kCancelled)) {
      s_.queued.fetch_sub(1);  // the next mutex holder frees the entry
      return false;
    }
    claim(i);  // granted meanwhile
    return true;
  }
  // After a granted wait, without the mutex: the slot is the caller's, the entry can be reused.
  void claim(int i) { s_.waiters[i].state.store(kClaimed, std::memory_order_release); }

  // What a release found: a slot given back, none held by this process (counted), or the mutex
  // busy until `lock_until` (nothing done).
  enum class Released { ok, none, busy };

  // Gives a slot of this process back, handing it to the oldest live waiter.
  Released release(Nanos lock_until) {
    Locked lock(*this, lock_until);
    if (!lock) return Released::busy;
    Holder* mine = my_holder();
    if (mine == nullptr || mine->slots == 0) {
      s_.over_releases.fetch_add(1, std::memory_order_relaxed);
      return Released::none;
    }
    --mine->slots;  // the record stays (with 0) while the process lives: found again at once
    s_.held.fetch_sub(1);
    grant_free_slots();
    return Released::ok;
  }
  bool release() { return release(kForever) == Released::ok; }

  // Changes the cap; more slots go to the oldest waiters (how many got one), nullopt when busy.
  std::optional<std::int64_t> set_max(std::int64_t max_slots, Nanos lock_until) {
    Locked lock(*this, lock_until);
    if (!lock) return std::nullopt;
    s_.max_slots.store(max_slots);
    return grant_free_slots();
  }
  std::int64_t set_max(std::int64_t max_slots) { return *set_max(max_slots, kForever); }

  // The figures, read without the mutex (each is exact; together they may be a moment apart).
  std::int64_t max_slots() const noexcept { return s_.max_slots.load(); }
  std::int64_t held() const noexcept { return s_.held.load(); }
  std::int64_t waiting() const noexcept { return s_.queued.load(); }
  std::int64_t over_release_count() const noexcept { return s_.over_releases.load(std::memory_order_relaxed); }

  // For tests: the mutex itself (a test may hold it, as a stopped peer would).
  pthread_mutex_t& mutex_for_tests() noexcept { return s_.mutex; }

 private:
  // The robust mutex, had by `until_ns` (kTryLock: one try; kForever: whatever it takes) or not
  // at all. A previous owner that died inside leaves the state to be recounted.
  class Locked : public RobustLock {
   public:
    Locked(SharedSemaphore& sem, Nanos until_ns) : RobustLock(sem.s_.mutex, until_ns, [&sem] { sem.recount(); }) {}
  };

  static bool alive(std::int64_t pid, std::int64_t start_time) { return same_process_alive(pid, start_time); }

  // With the mutex held: a slot is free and nobody waits for one.
  bool free_now() const noexcept { return s_.queued.load() == 0 && s_.held.load() < s_.max_slots.load(); }

  Holder* find_holder(std::int64_t pid, std::int64_t start) {
    if (pid == me_ && start == my_start_) return my_holder();
    for (Holder& h : s_.holders) {
      if (h.pid == pid && h.start_time == start) return &h;
    }
    return nullptr;
  }
  // This process's record, remembered between calls (the table is scanned only when it moved).
  Holder* my_holder() {
    if (mine_ != nullptr && mine_->pid == me_ && mine_->start_time == my_start_) return mine_;
    mine_ = nullptr;
    for (Holder& h : s_.holders) {
      if (h.pid == me_ && h.start_time == my_start_) return mine_ = &h;
    }
    return nullptr;
  }
  void take_slot_for(std::int64_t pid, std::int64_t start) {
    Holder* h = find_holder(pid, start);
    if (h == nullptr) {
      for (Holder& free : s_.holders) {
        if (free.pid == 0) {
          free = Holder{pid, start, 0};
          h = &free;
          break;
        }
      }
    }
    if (h == nullptr) {
      throw std::runtime_error("a shared limiter's holder table is full (" + std::to_string(kMaxProcesses) +
                               " processes)");
    }
    ++h->slots;
    s_.held.fetch_add(1);
  }
  static void free_entry(WaiterEntry& w) {
    w.pid = 0;
    w.ticket = 0;
    w.state.store(0, std::memory_order_release);
  }
  // With the mutex held: frees an entry its waiter has left (cancelled) or taken its slot from.
  static void tidy(WaiterEntry& w) {
    if (w.pid == 0) return;
    const std::uint32_t state = w.state.load(std::memory_order_acquire);
    if (state == kCancelled || state == kClaimed) free_entry(w);
  }

  // The oldest queued entry, or nullptr (tidying the entries it passes).
  WaiterEntry* oldest() {
    WaiterEntry* best = nullptr;
    for (WaiterEntry& w : s_.waiters) {
      tidy(w);
      if (w.pid != 0 && w.state.load(std::memory_order_relaxed) == kWaiting && (best == nullptr || w.ticket < best->ticket)) {
        best = &w;
      }
    }
    return best;
  }

  // Hands free slots to the oldest waiters (skipping dead ones, and those that left meanwhile).
  // Returns how many were granted.
  std::int64_t grant_free_slots() {
    std::int64_t granted = 0;
    while (s_.queued.load() > 0 && s_.held.load() < s_.max_slots.load()) {
      WaiterEntry* w = oldest();
      if (w == nullptr) break;
      if (!alive(w->pid, w->start_time)) {  // died in the queue
        std::uint32_t expected = kWaiting;
        if (w->state.compare_exchange_strong(expected, kCancelled)) s_.queued.fetch_sub(1);
        free_entry(*w);
        continue;
      }
      std::uint32_t expected = kWaiting;
      if (!w->state.compare_exchange_strong(expected, kGranted)) continue;  // it left just now: tidied next
      s_.queued.fetch_sub(1);
      take_slot_for(w->pid, w->start_time);
      syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&w->state), FUTEX_WAKE, 1, nullptr, nullptr, 0);
      ++granted;
    }
    return granted;
  }

  // Takes back the slots of holders that are gone, frees the entries of waiters that are gone,
  // and hands the slots on (at most once per kReclaimSpacingNs).
  void reclaim_dead() {
    const Nanos now = now_ns();
    if (now - s_.last_reclaim_ns.load(std::memory_order_relaxed) < kReclaimSpacingNs) return;
    s_.last_reclaim_ns.store(now, std::memory_order_relaxed);
    for (Holder& h : s_.holders) {
      if (h.pid != 0 && h.pid != me_ && !alive(h.pid, h.start_time)) {
        s_.held.fetch_sub(h.slots);
        h = Holder{0, 0, 0};
      }
    }
    for (WaiterEntry& w : s_.waiters) {
      tidy(w);
      if (w.pid != 0 && w.pid != me_ && !alive(w.pid, w.start_time)) {
        std::uint32_t expected = kWaiting;
        if (w.state.compare_exchange_strong(expected, kCancelled)) s_.queued.fetch_sub(1);
        free_entry(w);  // queued, or granted a slot it never claimed (the slot went back above)
      }
    }
    grant_free_slots();
  }

  // After a process died holding the mutex: held and queued from the tables.
  void recount() {
    std::int64_t held = 0;
    for (const Holder& h : s_.holders) held += h.pid != 0 ? h.slots : 0;
    std::int64_t queued = 0;
    for (WaiterEntry& w : s_.waiters) {
      tidy(w);
      queued += (w.pid != 0 && w.state.load() == kWaiting) ? 1 : 0;
    }
    s_.held.store(held);
    s_.queued.store(queued);
  }

  State& s_;
  std::int64_t me_;
  std::int64_t my_start_;
  Holder* mine_ = nullptr;  // this process's record in s_.holders (guarded by the mutex)
};

}  // namespace omnilimit
