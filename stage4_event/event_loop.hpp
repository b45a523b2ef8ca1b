/// @file event_loop.hpp
/// @brief One thread's event loop: epoll over the listener and its connections, and timers.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "connection.hpp"
#include "lab/fd.hpp"
#include "lab/net.hpp"
#include "limiter.hpp"
#include "status.hpp"
#include "timers.hpp"

namespace lab {

/// @brief Clients a loop accepts before it moves to the back of the listener's wake-up queue.
inline constexpr std::uint64_t kRotateEvery = 16;

/// @brief What every loop of the server shares (all of it thread-safe or read-only).
struct Shared {
    Listener& listener;            ///< The one listening socket, non-blocking.
    ConnectionLimiter& limiter;    ///< The limits, exact across loops (one lock).
    const ServerContext& context;  ///< Site, deadlines, status page.
    Counters& counters;            ///< What happened, for /server-status.
    /// @brief Held from accept() to the limiter's verdict, so that clients are admitted in
    /// the order they were accepted, whichever loop takes them (as stage 3's one thread does).
    mutable std::mutex admission_order{};
};

/// @brief A loop that accepts clients and drives their connections until shutdown.
///
/// Level-triggered epoll: a socket that is still readable or writable is reported again, so a
/// connection that stops after a slice of work is picked up on the next round. Every loop
/// watches the same listening socket with EPOLLEXCLUSIVE, so one loop (not all) wakes per
/// arriving client, and there is one listen queue for all of them. The kernel wakes the first
/// waiting loop in the order the loops registered the listener, so without care the first loop
/// takes nearly every client; every kRotateEvery clients a loop registers again, which puts it
/// last in that order. Deadlines live in a TimerQueue, one entry per open connection, and bound the
/// wait of epoll_wait().
class EventLoop {
  public:
    /// @brief Sets up epoll for @p shared's listener and the shutdown descriptor; throws
    /// StartupError.
    explicit EventLoop(const Shared& shared);
    /// @brief Not copyable: it owns its connections.
    EventLoop(const EventLoop&) = delete;
    /// @brief Not copy-assignable.
    EventLoop& operator=(const EventLoop&) = delete;

    /// @brief Serves until shutdown is requested and every connection has finished.
    void run();

    /// @brief Clients this loop took from the listener (read it once run() has returned).
    [[nodiscard]] std::uint64_t accepted() const noexcept { return accepted_; }

  private:
    struct Watched {
        std::unique_ptr<EventConnection> connection;
        Interest interest = Interest::read;
        Clock::time_point scheduled = Clock::time_point::max();  // in timers_, if < max
    };

    void accept_client(Clock::time_point now);
    void admit(Connection client, ConnectionLimiter::Admission admission, Clock::time_point now);
    std::uint64_t add(std::unique_ptr<EventConnection> connection, Interest first);
    void drive(std::uint64_t id, Clock::time_point now, bool stopping);
    static Interest step(EventConnection& connection, Clock::time_point now, bool stopping);
    void settle(std::uint64_t id, Watched& watched, Interest next);
    void forget(std::uint64_t id);
    void expire(Clock::time_point now);
    void pause_accepting(Clock::time_point now);
    void resume_accepting();
    void rotate_listener();
    void begin_shutdown(Clock::time_point now);

    const Shared& shared_;
    Fd epoll_;
    std::unordered_map<std::uint64_t, Watched> connections_;
    std::deque<std::uint64_t> refused_;  // lingering refusals, oldest first
    TimerQueue timers_;
    std::uint64_t next_id_ = kFirstConnectionId;
    std::uint64_t accepted_ = 0;
    bool accepting_ = true;
    Clock::time_point resume_at_ = Clock::time_point::max();
    bool stopping_ = false;

    static constexpr std::uint64_t kListenerId = 0;
    static constexpr std::uint64_t kStopId = 1;
    static constexpr std::uint64_t kResumeTimerId = 2;
    static constexpr std::uint64_t kFirstConnectionId = 3;
};

/// @brief Raises the soft limit on open descriptors to the hard limit; the new soft limit.
///
/// Thousands of connections need thousands of descriptors, and the usual soft limit is 1024.
int raise_descriptor_limit() noexcept;

}  // namespace lab
