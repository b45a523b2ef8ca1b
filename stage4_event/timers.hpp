/// @file timers.hpp
/// @brief Deadlines of many connections in one min-heap, checked by one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "lab/net.hpp"

namespace lab {

/// @brief A min-heap of (deadline, id), at most one entry per id: the earliest on top.
///
/// Every entry knows its place in the heap (an index kept beside it, as libev's and Go's
/// timer heaps do), so a closed connection's entry is erased at once instead of waiting for
/// its deadline: the heap holds one entry per connection that is still open, whatever the
/// timeout and however many connections came and went.
class TimerQueue {
  public:
    /// @brief One scheduled deadline.
    struct Entry {
        Clock::time_point when;  ///< When it comes due.
        std::uint64_t id = 0;    ///< Whose deadline it is.
    };

    /// @brief Schedules @p id at @p when, replacing the deadline @p id had, if any.
    void schedule(std::uint64_t id, Clock::time_point when);

    /// @brief Removes @p id's entry; nothing if it has none.
    void cancel(std::uint64_t id);

    /// @brief Removes and returns every entry due at or before @p now, earliest first.
    [[nodiscard]] std::vector<Entry> pop_due(Clock::time_point now);

    /// @brief Milliseconds from @p now until the earliest entry (rounded up, at least 0), or
    /// -1 when empty: the timeout to give epoll_wait().
    [[nodiscard]] int wait_ms(Clock::time_point now) const;

    /// @brief Entries scheduled: one per id that has a deadline.
    [[nodiscard]] std::size_t size() const noexcept { return heap_.size(); }

  private:
    void place(std::size_t i, Entry entry);
    void sift_up(std::size_t i, Entry entry);
    void sift_down(std::size_t i, Entry entry);
    void remove_at(std::size_t i);

    std::vector<Entry> heap_;
    std::unordered_map<std::uint64_t, std::size_t> index_;  // id → its place in heap_
};

}  // namespace lab
