#include "timers.hpp"

#include <algorithm>
#include <chrono>
#include <limits>

namespace lab {

void TimerQueue::schedule(std::uint64_t id, Clock::time_point when) {
    const auto found = index_.find(id);
    if (found == index_.end()) {
        index_.emplace(id, heap_.size());
        heap_.push_back({when, id});
        sift_up(heap_.size() - 1, heap_.back());
        return;
    }
    const std::size_t i = found->second;
    const bool earlier = when < heap_[i].when;
    if (earlier) {
        sift_up(i, {when, id});
    } else {
        sift_down(i, {when, id});
    }
}

void TimerQueue::cancel(std::uint64_t id) {
    const auto found = index_.find(id);
    if (found == index_.end()) return;
    const std::size_t i = found->second;
    index_.erase(found);
    remove_at(i);
}

std::vector<TimerQueue::Entry> TimerQueue::pop_due(Clock::time_point now) {
    std::vector<Entry> due;
    while (!heap_.empty() && heap_.front().when <= now) {
        due.push_back(heap_.front());
        index_.erase(heap_.front().id);
        remove_at(0);
    }
    return due;
}

int TimerQueue::wait_ms(Clock::time_point now) const {
    if (heap_.empty()) return -1;
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(heap_.front().when - now);
    return static_cast<int>(
        std::clamp<long long>(left.count(), 0, std::numeric_limits<int>::max()));
}

// Puts @p entry at heap_[i] and records where it is.
void TimerQueue::place(std::size_t i, Entry entry) {
    heap_[i] = entry;
    index_[entry.id] = i;
}

// Moves the hole at @p i towards the top until @p entry fits there.
void TimerQueue::sift_up(std::size_t i, Entry entry) {
    while (i > 0) {
        const std::size_t parent = (i - 1) / 2;
        if (!(entry.when < heap_[parent].when)) break;
        place(i, heap_[parent]);
        i = parent;
    }
    place(i, entry);
}

// Moves the hole at @p i towards the leaves until @p entry fits there.
void TimerQueue::sift_down(std::size_t i, Entry entry) {
    const std::size_t n = heap_.size();
    while (true) {
        std::size_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && heap_[child + 1].when < heap_[child].when) ++child;
        if (!(heap_[child].when < entry.when)) break;
        place(i, heap_[child]);
        i = child;
    }
    place(i, entry);
}

// Takes heap_[i] out (its index_ entry is already gone): the last entry fills the hole.
void TimerQueue::remove_at(std::size_t i) {
    const Entry last = heap_.back();
    heap_.pop_back();
    if (i == heap_.size()) return;  // it was the last one
    if (i > 0 && last.when < heap_[(i - 1) / 2].when) {
        sift_up(i, last);
    } else {
        sift_down(i, last);
    }
}

}  // namespace lab
