#include "limiter.hpp"

#include <new>
#include <utility>

namespace lab {

ConnectionLimiter::Slot::Slot(Slot&& other) noexcept
    : limiter_(std::exchange(other.limiter_, nullptr)), client_(std::move(other.client_)) {}

ConnectionLimiter::Slot& ConnectionLimiter::Slot::operator=(Slot&& other) noexcept {
    if (this != &other) {
        release();
        limiter_ = std::exchange(other.limiter_, nullptr);
        client_ = std::move(other.client_);
    }
    return *this;
}

void ConnectionLimiter::Slot::release() noexcept {
    if (limiter_ != nullptr) std::exchange(limiter_, nullptr)->release(client_);
}

ConnectionLimiter::ConnectionLimiter(std::size_t max_per_client, std::size_t max_total)
    : max_per_client_(max_per_client), max_total_(max_total) {}

ConnectionLimiter::Admission ConnectionLimiter::try_acquire(const std::string& client) noexcept {
    try {
        std::string key = client;  // copied before anything is counted
        std::lock_guard lock(mutex_);
        // Look-up, check and increment under one lock: two connections can never both take
        // the last slot.
        const auto it = per_client_.find(key);
        const std::size_t held = it == per_client_.end() ? 0 : it->second;
        if (held >= max_per_client_) return {Verdict::client_full, {}};
        if (total_ >= max_total_) return {Verdict::server_full, {}};
        ++per_client_[key];  // the only step that can fail, and it counts nothing if it does
        ++total_;
        return {Verdict::admitted, Slot(this, std::move(key))};
    } catch (const std::bad_alloc&) {
        // No memory to count one more connection is a full server as far as the client is
        // concerned: it gets the 503.
        return {Verdict::server_full, {}};
    }
}

void ConnectionLimiter::release(const std::string& client) noexcept {
    std::lock_guard lock(mutex_);
    const auto it = per_client_.find(client);
    if (it == per_client_.end()) return;  // cannot happen: every Slot was counted
    // Forget clients with nothing open, so the table stays as small as the live set.
    if (--it->second == 0) per_client_.erase(it);
    --total_;
}

ConnectionLimiter::Snapshot ConnectionLimiter::snapshot() const {
    std::lock_guard lock(mutex_);
    Snapshot snap;
    snap.total = total_;
    snap.per_client.insert(per_client_.begin(), per_client_.end());
    return snap;
}

}  // namespace lab
