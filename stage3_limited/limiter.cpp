#include "limiter.hpp"

#include <new>
#include <utility>

namespace lab {

ConnectionLimiter::Slot::Slot(Slot&& other) noexcept
    : limiter_(std::exchange(other.limiter_, nullptr)), entry_(other.entry_) {}

ConnectionLimiter::Slot& ConnectionLimiter::Slot::operator=(Slot&& other) noexcept {
    if (this != &other) {
        release();
        limiter_ = std::exchange(other.limiter_, nullptr);
        entry_ = other.entry_;
    }
    return *this;
}

void ConnectionLimiter::Slot::release() noexcept {
    if (limiter_ != nullptr) std::exchange(limiter_, nullptr)->release(entry_);
}

Reclaimable* ConnectionLimiter::Slot::reclaimable() const noexcept {
    return limiter_ != nullptr ? &entry_->reclaimable : nullptr;
}

ConnectionLimiter::ConnectionLimiter(std::size_t max_per_client, std::size_t max_total,
                                     bool reclaim_idle)
    : max_per_client_(max_per_client), max_total_(max_total), reclaim_idle_(reclaim_idle) {}

ConnectionLimiter::Admission ConnectionLimiter::try_acquire(const std::string& client) noexcept {
    try {
        // Everything that allocates happens first, before anything is counted or reclaimed.
        std::list<Entry> fresh;
        fresh.emplace_back(client);
        const std::string& key = fresh.front().client;
        std::lock_guard lock(mutex_);
        // Look-up, check and increment under one lock: two connections can never both take
        // the last slot.
        auto [count, inserted] = per_client_.try_emplace(key, 0);
        if (count->second >= max_per_client_) return {Verdict::client_full, {}};
        if (total_ >= max_total_ && !(reclaim_idle_ && reclaim_oldest_locked(key))) {
            if (inserted) per_client_.erase(count);
            return {Verdict::server_full, {}};
        }
        ++count->second;
        ++total_;
        entries_.splice(entries_.end(), fresh);
        return {Verdict::admitted, Slot(this, std::prev(entries_.end()))};
    } catch (const std::bad_alloc&) {
        // No memory to count one more connection is a full server as far as the client is
        // concerned: it gets the 503.
        return {Verdict::server_full, {}};
    }
}

bool ConnectionLimiter::reclaim_oldest_locked(const std::string& newcomer) noexcept {
    for (Entry& entry : entries_) {
        // reclaim() fails for a connection whose head has arrived: it is never taken.
        if (!entry.counted || !entry.reclaimable.reclaim()) continue;
        entry.counted = false;  // its Slot still lives, but no longer counts
        uncount_locked(entry.client, &newcomer);
        ++reclaimed_;
        return true;
    }
    return false;
}

void ConnectionLimiter::uncount_locked(const std::string& client,
                                       const std::string* keep) noexcept {
    const auto it = per_client_.find(client);
    if (it == per_client_.end()) return;  // cannot happen: every counted entry is in the table
    --total_;
    // Forget clients with nothing open, so the table stays as small as the live set; but keep
    // the newcomer's entry, which try_acquire() is about to count.
    if (--it->second == 0 && (keep == nullptr || *keep != client)) per_client_.erase(it);
}

void ConnectionLimiter::release(std::list<Entry>::iterator entry) noexcept {
    std::lock_guard lock(mutex_);
    if (entry->counted) uncount_locked(entry->client, nullptr);
    entries_.erase(entry);
}

ConnectionLimiter::Snapshot ConnectionLimiter::snapshot() const {
    std::lock_guard lock(mutex_);
    Snapshot snap;
    snap.total = total_;
    snap.per_client.insert(per_client_.begin(), per_client_.end());
    snap.reclaimed = reclaimed_;
    return snap;
}

}  // namespace lab
