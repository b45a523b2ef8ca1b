/// @file limiter.hpp
/// @brief Admission control: at most N connections per client IP and M in all.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "lab/session.hpp"

namespace lab {

/// @brief Longest a newcomer waits for a place that is coming free (Handover::when_released).
///
/// A place comes free when the thread of a connection that no longer counts (closed, or
/// reclaimed: its 408 fits a fresh socket's send buffer) is gone. That needs nothing from any
/// client, so the wait is only as long as threads take to be scheduled; past it the newcomer
/// gets 503.
inline constexpr std::chrono::milliseconds kHandoverWait{1000};

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
///
/// A Slot's place in the total counts from try_acquire() until the Slot is destroyed. Stage 3
/// keeps each slot in its connection's thread task, which ThreadSet destroys only once the
/// thread is gone: so the total limit bounds threads as well as connections. With
/// Handover::when_released (stage 3's), a place whose connection no longer counts (closed,
/// Slot::connection_closed(), or reclaimed) passes to a newcomer only once its Slot is
/// destroyed, and try_acquire() waits for that, at most kHandoverWait, rather than refuse a
/// newcomer to a server that is full only of threads on their way out.
class ConnectionLimiter {
    struct Entry;

  public:
    /// @brief When the place of a closed or reclaimed connection passes to a newcomer.
    enum class Handover {
        at_once,        ///< At once; the reclaimed connection winds down beside the newcomer.
        when_released,  ///< Once the reclaimed Slot is destroyed; try_acquire() waits for it.
    };

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
        /// @brief The connection is closed: it no longer counts for its client (nor in
        /// `total`), but its place in the total limit stays taken until the Slot is destroyed
        /// (Handover::when_released; stage 3 destroys it once the thread is gone).
        void connection_closed() const noexcept;

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

    /// @brief One taken place in the total, for the scoreboard.
    struct SlotView {
        std::string client;            ///< The client's address.
        Phase phase = Phase::reading;  ///< Where its connection is.
        bool counted = true;           ///< Still counts for its client (not closed or reclaimed).
        std::chrono::milliseconds age{0};  ///< Time since it was admitted.
    };

    /// @brief What is held right now, for the status page and tests.
    struct Snapshot {
        std::size_t total = 0;                          ///< Connections held in all.
        std::map<std::string, std::size_t> per_client;  ///< Connections held per client.
        std::uint64_t reclaimed = 0;                    ///< Slots reclaimed so far.
        /// @brief Every taken place, oldest first, except those answering the status page.
        std::vector<SlotView> slots;
    };

    /// @brief A limiter allowing @p max_per_client per client and @p max_total in all (both ≥ 1);
    /// with @p reclaim_idle, a full server reclaims the oldest head-incomplete connection, whose
    /// place passes to the newcomer as @p handover says.
    ConnectionLimiter(std::size_t max_per_client, std::size_t max_total, bool reclaim_idle = false,
                      Handover handover = Handover::at_once);
    /// @brief Not copyable: it owns what it holds.
    ConnectionLimiter(const ConnectionLimiter&) = delete;
    /// @brief Not copy-assignable.
    ConnectionLimiter& operator=(const ConnectionLimiter&) = delete;

    /// @brief Takes a slot for @p client if both limits allow it (reclaiming one if enabled).
    ///
    /// Out of memory, it answers server_full and counts nothing. With Handover::when_released,
    /// a server full of places that are coming free waits up to kHandoverWait for one.
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
        Reclaimable reclaimable;  // also carries the connection's Phase
        bool counted = true;
        Clock::time_point admitted = Clock::now();  // a vDSO read, no system call
    };

    void release(std::list<Entry>::iterator entry) noexcept;
    void uncount_locked(const std::string& client, const std::string* keep) noexcept;
    void close(std::list<Entry>::iterator entry) noexcept;
    bool full_locked() const noexcept;
    bool make_room_locked(std::unique_lock<std::mutex>& lock, const std::string& newcomer) noexcept;
    bool reclaim_oldest_locked(const std::string& newcomer) noexcept;

    const std::size_t max_per_client_;
    const std::size_t max_total_;
    const bool reclaim_idle_;
    const Handover handover_;
    mutable std::mutex mutex_;
    std::condition_variable released_;  // a Slot was destroyed (Handover::when_released waits)
    std::size_t total_ = 0;
    std::uint64_t reclaimed_ = 0;
    std::unordered_map<std::string, std::size_t> per_client_;
    std::list<Entry> entries_;  // oldest first
};

}  // namespace lab
