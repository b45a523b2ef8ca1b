/// @file limiter.hpp
/// @brief Admission control: at most N connections per client IP and M in all.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

#include "lab/session.hpp"

namespace lab {

/// @brief Counts open connections per client and in total, and refuses those over a limit.
///
/// Shaped like nginx's limit_conn: look-up, check and increment happen under one lock, the
/// release runs on every exit path (it is a destructor), and a client's entry is erased when
/// its count drops to zero, so the table never grows with clients that have left.
///
/// With reclaim_idle, a full server does not refuse at once: like nginx's reusable
/// connections, the oldest admitted connection still waiting for its request head gives up
/// its slot (its session answers 408) and the newcomer takes it. A connection whose head has
/// arrived is never reclaimed.
class ConnectionLimiter {
    struct Entry;

  public:
    /// @brief Why a connection was or was not admitted.
    enum class Verdict {
        admitted,     ///< A slot was taken.
        client_full,  ///< The client already holds max_per_client connections (429).
        server_full,  ///< The server already holds max_total connections (503).
    };

    /// @brief A held connection slot; gives it back when destroyed. Move-only.
    class Slot {
      public:
        /// @brief An empty slot (holds nothing).
        Slot() noexcept = default;
        /// @brief Not copyable: it owns what it holds.
        Slot(const Slot&) = delete;
        /// @brief Not copy-assignable.
        Slot& operator=(const Slot&) = delete;
        /// @brief Takes the slot from @p other.
        Slot(Slot&& other) noexcept;
        /// @brief Releases the current slot, then takes the one from @p other.
        Slot& operator=(Slot&& other) noexcept;
        /// @brief Gives the slot back, if one is held.
        ~Slot() { release(); }
        /// @brief True while this object holds a slot (a reclaimed one included, until released).
        [[nodiscard]] bool held() const noexcept { return limiter_ != nullptr; }
        /// @brief Gives the slot back now (idempotent).
        void release() noexcept;
        /// @brief Where the session and a reclaim meet for this connection; nullptr if empty.
        [[nodiscard]] Reclaimable* reclaimable() const noexcept;

      private:
        friend class ConnectionLimiter;
        Slot(ConnectionLimiter* limiter, std::list<Entry>::iterator entry) noexcept
            : limiter_(limiter), entry_(entry) {}
        ConnectionLimiter* limiter_ = nullptr;
        std::list<Entry>::iterator entry_{};
    };

    /// @brief Result of try_acquire(): the verdict, and the slot when admitted.
    struct Admission {
        Verdict verdict = Verdict::server_full;  ///< Outcome.
        Slot slot;                               ///< Held exactly when verdict is admitted.
    };

    /// @brief What is held right now, for the status page and tests.
    struct Snapshot {
        std::size_t total = 0;                          ///< Connections held in all.
        std::map<std::string, std::size_t> per_client;  ///< Connections held per client.
        std::uint64_t reclaimed = 0;                    ///< Slots reclaimed so far.
    };

    /// @brief A limiter allowing @p max_per_client per client and @p max_total in all (both ≥ 1);
    /// with @p reclaim_idle, a full server reclaims the oldest head-incomplete connection.
    ConnectionLimiter(std::size_t max_per_client, std::size_t max_total, bool reclaim_idle = false);
    /// @brief Not copyable: it owns what it holds.
    ConnectionLimiter(const ConnectionLimiter&) = delete;
    /// @brief Not copy-assignable.
    ConnectionLimiter& operator=(const ConnectionLimiter&) = delete;

    /// @brief Takes a slot for @p client if both limits allow it (reclaiming one if enabled).
    ///
    /// Out of memory, it answers server_full and counts nothing.
    [[nodiscard]] Admission try_acquire(const std::string& client) noexcept;

    /// @brief Copies the current counts.
    [[nodiscard]] Snapshot snapshot() const;

    /// @brief The per-client limit.
    [[nodiscard]] std::size_t max_per_client() const noexcept { return max_per_client_; }
    /// @brief The total limit.
    [[nodiscard]] std::size_t max_total() const noexcept { return max_total_; }
    /// @brief Whether a full server reclaims idle connections.
    [[nodiscard]] bool reclaim_idle() const noexcept { return reclaim_idle_; }

  private:
    // One admitted connection, in admission order; counted until released or reclaimed.
    struct Entry {
        explicit Entry(std::string c) : client(std::move(c)) {}
        std::string client;
        Reclaimable reclaimable;
        bool counted = true;
    };

    void release(std::list<Entry>::iterator entry) noexcept;
    void uncount_locked(const std::string& client, const std::string* keep) noexcept;
    bool reclaim_oldest_locked(const std::string& newcomer) noexcept;

    const std::size_t max_per_client_;
    const std::size_t max_total_;
    const bool reclaim_idle_;
    mutable std::mutex mutex_;
    std::size_t total_ = 0;
    std::uint64_t reclaimed_ = 0;
    std::unordered_map<std::string, std::size_t> per_client_;
    std::list<Entry> entries_;  // oldest first
};

}  // namespace lab
