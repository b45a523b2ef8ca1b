/// @file net.hpp
/// @brief Sockets: listening, accepting, and deadline-bound reads and writes.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "lab/fd.hpp"

namespace lab {

/// @brief Clock used for every deadline.
using Clock = std::chrono::steady_clock;

/// @brief One accepted client connection (non-blocking, close-on-exec).
struct Connection {
    Fd fd;                ///< The connected socket.
    std::string peer_ip;  ///< Client address; IPv4-mapped IPv6 is folded to plain IPv4.
};

/// @brief True for an address of this machine's loopback interface: 127.0.0.0/8 or `::1`.
[[nodiscard]] bool is_loopback_address(std::string_view ip) noexcept;

/// @brief True for the errors of accept() that mean the process or the system is out of
/// descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM): an immediate retry fails again.
[[nodiscard]] bool out_of_resources(int err) noexcept;

/// @brief How long accept() sleeps when the process is out of descriptors.
inline constexpr std::chrono::milliseconds kAcceptBackoff{100};
/// @brief Listen queue length.
inline constexpr int kListenBacklog = 1024;

/// @brief A listening socket whose accept() returns nothing once shutdown was requested.
///
/// accept() may be called from several threads at once. A process has one Listener: the
/// shutdown request shuts its socket down, which wakes every thread blocked in accept().
class Listener {
  public:
    /// @brief Binds @p address:@p port with SO_REUSEADDR and listens; throws StartupError.
    Listener(const std::string& address, std::uint16_t port);
    /// @brief Not copyable: it owns what it holds.
    Listener(const Listener&) = delete;
    /// @brief Not copy-assignable.
    Listener& operator=(const Listener&) = delete;
    /// @brief Closes the socket; a later shutdown request no longer refers to it.
    ~Listener();

    /// @brief Waits for the next client; nullopt once SIGINT/SIGTERM arrived.
    ///
    /// Retries EINTR and ECONNABORTED; on EMFILE/ENFILE sleeps kAcceptBackoff instead of
    /// spinning, then tries again.
    [[nodiscard]] std::optional<Connection> accept();

    /// @brief Makes the socket non-blocking, for an event loop; throws StartupError.
    void set_nonblocking();

    /// @brief Accepts one client: without waiting once set_nonblocking() was called, else
    /// waiting for the next one.
    ///
    /// Retries EINTR and ECONNABORTED. Returns nullopt with @p error set: EAGAIN when no
    /// client is queued, EMFILE/ENFILE when out of descriptors (logged at most every few
    /// seconds; the caller should stop accepting for kAcceptBackoff), ENOMEM when the client
    /// was accepted but had to be dropped, or another errno.
    [[nodiscard]] std::optional<Connection> try_accept(int& error);

    /// @brief The listening descriptor, for an event loop's epoll set.
    [[nodiscard]] int fd() const noexcept { return fd_.get(); }

    /// @brief The port actually bound (useful after asking for port 0).
    [[nodiscard]] std::uint16_t port() const noexcept { return port_; }
    /// @brief The address as given.
    [[nodiscard]] const std::string& address() const noexcept { return address_; }

  private:
    Fd fd_;
    std::string address_;
    std::uint16_t port_ = 0;
};

/// @brief How an I/O call ended.
enum class IoStatus {
    ok,       ///< Did what was asked.
    closed,   ///< The peer closed (reads) or reset the connection.
    timeout,  ///< The deadline passed first.
    stopped,  ///< Shutdown was requested while waiting.
    error,    ///< Any other socket error.
};

/// @brief Reads at most @p size bytes once data is there, waiting until @p deadline.
///
/// Gives up with `stopped` as soon as shutdown is requested: a server never waits on a
/// silent client while it is trying to exit.
[[nodiscard]] IoStatus read_some(int fd, char* buffer, std::size_t size, Clock::time_point deadline,
                                 std::size_t& received);

/// @brief How a send ended, and how many bytes the kernel took before that.
struct SendResult {
    IoStatus status = IoStatus::ok;  ///< `ok` once every byte was taken.
    std::uint64_t sent = 0;          ///< Bytes taken, all of them or those before a failure.
};

/// @brief Sends all of @p data; fails if the peer takes nothing for @p idle_timeout.
[[nodiscard]] SendResult send_all(int fd, std::string_view data,
                                  std::chrono::milliseconds idle_timeout,
                                  bool more_follows = false);

/// @brief Sends @p count bytes of @p file_fd with sendfile(); same idle rule as send_all().
[[nodiscard]] SendResult send_file(int fd, int file_fd, std::uint64_t count,
                                   std::chrono::milliseconds idle_timeout);

/// @brief How long a reply already under way may go on once shutdown is requested.
inline constexpr std::chrono::milliseconds kShutdownGrace{1000};

/// @brief How long an error reply waits for the client to finish before the socket closes.
inline constexpr std::chrono::milliseconds kLingerTimeout{2000};
/// @brief Most bytes read and thrown away while lingering.
inline constexpr std::size_t kLingerMaxBytes = 1 << 20;

/// @brief Ends the connection so the client can read everything already sent.
///
/// Closing with unread input makes the kernel send a reset that can destroy the reply in
/// flight. So this first discards input: with a zero @p linger only what has already
/// arrived; otherwise it shuts down the sending side and reads until the client closes,
/// @p linger passes, or kLingerMaxBytes were read.
void close_gracefully(Fd fd, std::chrono::milliseconds linger);

/// @brief Turns SIGINT and SIGTERM into a shutdown request while it lives; ignores SIGPIPE.
///
/// Create it first thing in main, before any other thread: it blocks both signals in the
/// calling thread, so every thread started later inherits the mask, and one watcher thread
/// takes them with sigwait() and calls request_shutdown(). No code runs inside a signal
/// handler, so nothing has to be async-signal-safe and sanitizers see ordinary calls.
class SignalWatcher {
  public:
    /// @brief Blocks the signals and starts the watcher thread; throws StartupError.
    SignalWatcher();
    /// @brief Not copyable: it owns what it holds.
    SignalWatcher(const SignalWatcher&) = delete;
    /// @brief Not copy-assignable.
    SignalWatcher& operator=(const SignalWatcher&) = delete;
    /// @brief Stops and joins the watcher thread.
    ~SignalWatcher();

  private:
    std::atomic<bool> leaving_{false};
    std::thread thread_;
};

/// @brief True once SIGINT or SIGTERM arrived (or request_shutdown() was called).
[[nodiscard]] bool shutdown_requested() noexcept;
/// @brief Requests shutdown from inside the program.
void request_shutdown() noexcept;
/// @brief A descriptor that becomes readable, and stays so, once shutdown is requested.
[[nodiscard]] int shutdown_fd() noexcept;

}  // namespace lab
