/// @file timers.hpp
/// @brief Deadlines of many connections in one min-heap, checked by one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "lab/net.hpp"

namespace lab {

/// @brief A min-heap of (deadline, connection id): the earliest deadline is always on top.
///
/// Entries are never removed early. A connection whose deadline moves later leaves its old
/// entry in place; when that entry comes due the owner sees the deadline has moved and
/// pushes the new one (lazy deletion, as in libevent's and nginx's timer trees). So pushing
/// is needed only when a deadline moves *earlier*, and the heap holds about one entry per
/// connection.
class TimerQueue {
  public:
    /// @brief One scheduled deadline.
    struct Entry {
        Clock::time_point when;  ///< When it comes due.
        std::uint64_t id = 0;    ///< Whose deadline it is.
    };

    /// @brief Schedules @p id at @p when.
    void push(Clock::time_point when, std::uint64_t id);

    /// @brief Removes and returns every entry due at or before @p now, earliest first.
    [[nodiscard]] std::vector<Entry> pop_due(Clock::time_point now);

    /// @brief Milliseconds from @p now until the earliest entry (rounded up, at least 0), or
    /// -1 when empty: the timeout to give epoll_wait().
    [[nodiscard]] int wait_ms(Clock::time_point now) const;

    /// @brief Entries scheduled (stale ones included).
    [[nodiscard]] std::size_t size() const noexcept { return heap_.size(); }

  private:
    std::vector<Entry> heap_;
};

}  // namespace lab
