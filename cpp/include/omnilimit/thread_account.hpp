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
// An account tracks kTracked limiters (by id, never 0). An entry frees up once it holds nothing
// and has no failure pending. Code that checks acquire()'s answer and releases only what it got
// leaves a failure pending on every limiter it once failed to get; a slot taken and never given
// back (the limiter dropped holding it) stays held in the account. So when the account is full, a
// new limiter takes the place of an entry whose limiter no longer exists (the caller says which
// ones exist: `live`), else of the oldest failure pending (forgotten: its next release, if any, is
// a plain one). An entry holding a slot of a living limiter is never given up: a thread holding
// slots of kTracked living limiters has the rule off for a fifth until one of them is released.
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
    std::uint64_t failed_at = 0;  // the thread's failure count when this one was noted: its age
  };

  // After this thread's acquire of limiter `id`: a slot taken (`acquired`), or none. A failure
  // while it holds a slot of the limiter is not the case the rule is for.
  void after_acquire(std::uint64_t id, bool acquired) noexcept {
    after_acquire(id, acquired, [](std::uint64_t) { return true; });
  }
  // The same, `live(limiter_id) -> bool` saying which limiters still exist.
  template <class Live>
  void after_acquire(std::uint64_t id, bool acquired, Live&& live) noexcept {
    if (Entry* mine = find_or_add(id, live)) {
      if (acquired) {
        ++mine->held;
        mine->failed = false;
      } else {
        mine->failed = mine->held == 0;
        mine->failed_at = ++failures_;
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

  // Slots of limiter `id` this thread holds (0 when it does not track the limiter).
  std::uint32_t held(std::uint64_t id) noexcept {
    const Entry* mine = find(id);
    return mine == nullptr ? 0 : mine->held;
  }

  // The entry of limiter `id`, or nullptr.
  Entry* find(std::uint64_t id) noexcept {
    for (Entry& e : entries_) {
      if (e.limiter_id == id) return &e;
    }
    return nullptr;
  }
  // nullptr when the thread already tracks kTracked limiters: the rule is then off for this one.
  template <class Live>
  Entry* find_or_add(std::uint64_t id, Live&& live) noexcept {
    if (Entry* e = find(id)) return e;
    Entry* oldest_failure = nullptr;
    for (Entry& e : entries_) {
      if (e.limiter_id == 0) {
        e.limiter_id = id;
        return &e;
      }
      if (e.held == 0 && (oldest_failure == nullptr || e.failed_at < oldest_failure->failed_at)) oldest_failure = &e;
    }
    Entry* given_up = oldest_failure;  // the account is full (see above)
    for (Entry& e : entries_) {
      if (!live(e.limiter_id)) {
        given_up = &e;
        break;
      }
    }
    if (given_up != nullptr) *given_up = Entry{id, 0, false, 0};
    return given_up;
  }

 private:
  static void tidy(Entry* e) noexcept {
    if (e->held == 0 && !e->failed) e->limiter_id = 0;
  }

  Entry entries_[kTracked];
  std::uint64_t failures_ = 0;
};

}  // namespace omnilimit
