#include "timers.hpp"

#include <algorithm>
#include <chrono>
#include <limits>

namespace lab {

namespace {

// std::push_heap builds a max-heap; "later" as the ordering puts the earliest on top.
bool later(const TimerQueue::Entry& a, const TimerQueue::Entry& b) {
    return a.when > b.when;
}

}  // namespace

void TimerQueue::push(Clock::time_point when, std::uint64_t id) {
    heap_.push_back({when, id});
    std::push_heap(heap_.begin(), heap_.end(), later);
}

std::vector<TimerQueue::Entry> TimerQueue::pop_due(Clock::time_point now) {
    std::vector<Entry> due;
    while (!heap_.empty() && heap_.front().when <= now) {
        std::pop_heap(heap_.begin(), heap_.end(), later);
        due.push_back(heap_.back());
        heap_.pop_back();
    }
    return due;
}

int TimerQueue::wait_ms(Clock::time_point now) const {
    if (heap_.empty()) return -1;
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(heap_.front().when - now);
    return static_cast<int>(
        std::clamp<long long>(left.count(), 0, std::numeric_limits<int>::max()));
}

}  // namespace lab
