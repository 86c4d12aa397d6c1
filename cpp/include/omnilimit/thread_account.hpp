// ThreadAccount: one thread's account of the concurrency limiters it uses, for the over-release
// rule.
//
// A release() that answers a failed acquire. OmniGen's generators call acquire(timeout=120),
// ignore its result and release() in a `finally`; when the acquire timed out while every slot was
// held and others queued, that release would hand a slot nobody freed to the next waiter (one
// call more than the limit), and a count cannot tell it from a real release. So each thread keeps
// its own account of the limiters it uses: slots it holds, and whether its last acquire failed
// while it held none. A release() from a thread that holds no slot of the limiter, right after
// its own failed acquire of it, is that `finally`: it is ignored and counted as an over-release.
// A caller that releases only what it acquired never meets the rule; a thread that releases a
// slot acquired by another thread right after failing to get one itself would (rare; documented).
//
// An account tracks kTracked limiters (by id, never 0); a thread that uses more has the rule off
// for the others until an entry frees up (an entry frees up once it holds nothing and has no
// failure pending).
//
// Thread-safety: none; each thread keeps its own (a thread_local).
#pragma once

#include <cstdint>

namespace omnilimit {

class ThreadAccount {
 public:
  static constexpr int kTracked = 4;

  struct Entry {
    std::uint64_t limiter_id = 0;
    std::uint32_t held = 0;
    bool failed = false;
  };

  // After this thread's acquire of limiter `id`: a slot taken (`acquired`), or none. A failure
  // while it holds a slot of the limiter is not the case the rule is for.
  void after_acquire(std::uint64_t id, bool acquired) noexcept {
    if (Entry* mine = find_or_add(id)) {
      if (acquired) {
        ++mine->held;
        mine->failed = false;
      } else {
        mine->failed = mine->held == 0;
        tidy(mine);
      }
    }
  }

  // A release() of limiter `id` by this thread, settled: true when it answers the thread's own
  // failed acquire (it holds nothing and its last acquire failed) and must be ignored.
  bool release_answers_failure(std::uint64_t id) noexcept {
    Entry* mine = find(id);
    if (mine == nullptr) return false;
    const bool answers = mine->held == 0 && mine->failed;
    if (mine->held > 0) --mine->held;
    mine->failed = false;
    tidy(mine);
    return answers;
  }

  // A slot this thread took and passes on without using it (not a release: no failure is
  // forgotten).
  void gave_back(std::uint64_t id) noexcept {
    if (Entry* mine = find(id)) {
      if (mine->held > 0) --mine->held;
      tidy(mine);
    }
  }

  // The entry of limiter `id`, or nullptr.
  Entry* find(std::uint64_t id) noexcept {
    for (Entry& e : entries_) {
      if (e.limiter_id == id) return &e;
    }
    return nullptr;
  }
  // nullptr when the thread already tracks kTracked limiters: the rule is then off for this one.
  Entry* find_or_add(std::uint64_t id) noexcept {
    if (Entry* e = find(id)) return e;
    for (Entry& e : entries_) {
      if (e.limiter_id == 0) {
        e.limiter_id = id;
        return &e;
      }
    }
    return nullptr;
  }

 private:
  static void tidy(Entry* e) noexcept {
    if (e->held == 0 && !e->failed) e->limiter_id = 0;
  }

  Entry entries_[kTracked];
};

}  // namespace omnilimit
