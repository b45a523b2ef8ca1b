#include "lab/net.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>

#include <mutex>
#include <new>
#include <thread>

#include <pthread.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lab/log.hpp"
#include "lab/options.hpp"

namespace lab {

namespace {

// The shutdown pipe: request_shutdown() writes one byte, and every poll() in the program also
// watches the read end, which stays readable from then on, so all waits end together.
int g_stop_pipe[2] = {-1, -1};
std::atomic<bool> g_stop{false};
// The listening socket; shutting it down makes every blocked accept() return (EINVAL).
std::atomic<int> g_listen_fd{-1};
// When accept() last logged running out of descriptors (steady clock, ms), so a long
// episode costs one line every kExhaustionLogInterval, not one per retry.
std::atomic<long long> g_out_of_fds_logged{-1'000'000};
constexpr std::chrono::milliseconds kExhaustionLogInterval{5000};

// Creates the shutdown pipe once.
void make_stop_pipe() {
    static std::once_flag once;
    std::call_once(once, [] {
        if (::pipe2(g_stop_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
            throw StartupError(1, "pipe: " + errno_text(errno));
        }
    });
}

int ms_until(Clock::time_point deadline) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return static_cast<int>(std::clamp<long long>(left, 0, 24LL * 3600 * 1000));
}

// Waits for `events` on `fd` (and for shutdown when `watch_stop`) until `deadline`.
IoStatus wait_for(int fd, short events, Clock::time_point deadline, bool watch_stop = true) {
    while (true) {
        pollfd fds[2] = {{fd, events, 0}, {shutdown_fd(), POLLIN, 0}};
        const int n = ::poll(fds, watch_stop && fds[1].fd >= 0 ? 2 : 1, ms_until(deadline));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return IoStatus::error;
        if (watch_stop && fds[1].revents != 0) return IoStatus::stopped;
        if (n == 0) return IoStatus::timeout;
        return IoStatus::ok;  // ready, or an error the next call will report
    }
}

std::string ip_text(const sockaddr_storage& addr) {
    char buf[INET6_ADDRSTRLEN] = "";
    if (addr.ss_family == AF_INET) {
        const auto& in = reinterpret_cast<const sockaddr_in&>(addr);
        ::inet_ntop(AF_INET, &in.sin_addr, buf, sizeof buf);
    } else if (addr.ss_family == AF_INET6) {
        const auto& in6 = reinterpret_cast<const sockaddr_in6&>(addr);
        if (IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr)) {
            // ::ffff:1.2.3.4 is the IPv4 client 1.2.3.4 and must share its limits.
            ::inet_ntop(AF_INET, &in6.sin6_addr.s6_addr[12], buf, sizeof buf);
        } else {
            ::inet_ntop(AF_INET6, &in6.sin6_addr, buf, sizeof buf);
        }
    }
    return buf;
}

}  // namespace

bool out_of_resources(int err) noexcept {
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

bool is_loopback_address(std::string_view ip) noexcept {
    in_addr v4{};
    in6_addr v6{};
    char text[INET6_ADDRSTRLEN] = "";
    if (ip.size() >= sizeof text) return false;
    ip.copy(text, ip.size());
    if (::inet_pton(AF_INET, text, &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
    return ::inet_pton(AF_INET6, text, &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

Listener::Listener(const std::string& address, std::uint16_t port) : address_(address) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* found = nullptr;
    const std::string service = std::to_string(port);
    if (const int rc = ::getaddrinfo(address.c_str(), service.c_str(), &hints, &found); rc != 0) {
        throw StartupError(2, "cannot use bind address '" + address + "': " + ::gai_strerror(rc));
    }
    std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(found, &::freeaddrinfo);
    fd_.reset(::socket(found->ai_family, found->ai_socktype | SOCK_CLOEXEC, 0));
    if (!fd_.valid()) throw StartupError(1, std::string("socket: ") + errno_text(errno));
    const int one = 1;
    // Lets a restarted server bind at once while old connections sit in TIME_WAIT.
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd_.get(), found->ai_addr, found->ai_addrlen) != 0) {
        const int err = errno;
        throw StartupError(1, "cannot listen on " + address + ":" + service + ": " +
                                  errno_text(err) +
                                  (err == EADDRINUSE ? " (is another server running on it?)" : ""));
    }
    if (::listen(fd_.get(), kListenBacklog) != 0) {
        throw StartupError(1, std::string("listen: ") + errno_text(errno));
    }
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    ::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&bound), &len);
    g_listen_fd.store(fd_.get());
    port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6&>(bound).sin6_port
                                              : reinterpret_cast<sockaddr_in&>(bound).sin_port);
}

Listener::~Listener() {
    g_listen_fd.store(-1);
}

namespace {

// Turns an accepted socket into a Connection (the peer's address as text).
//
// Nagle's algorithm stays on: it could only hold back a reply's last small segment, and every
// reply is one write (or a head with MSG_MORE, then sendfile()) followed at once by close()
// or shutdown(), whose FIN pushes out whatever is queued. TCP_NODELAY would cost a syscall
// per connection and change nothing; nginx does not set it on HTTP/1.0 connections either.
std::optional<Connection> make_connection(Fd client, const sockaddr_storage& peer) {
    try {
        return Connection{std::move(client), ip_text(peer)};
    } catch (const std::bad_alloc&) {
        return std::nullopt;  // no memory even for the client's address: it is dropped
    }
}

// Logs running out of descriptors at most once per kExhaustionLogInterval.
void log_out_of_fds(int err) {
    const auto now =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
            .count();
    if (now - g_out_of_fds_logged.load() < kExhaustionLogInterval.count()) return;
    g_out_of_fds_logged.store(now);
    log_error("accept: " + errno_text(err) + "; retrying every " +
              std::to_string(kAcceptBackoff.count()) + " ms");
}

}  // namespace

std::optional<Connection> Listener::accept() {
    while (!shutdown_requested()) {
        // Blocks: the kernel wakes one waiting thread per client, and the shutdown request
        // wakes them all (see request_shutdown).
        int error = 0;
        if (auto connection = try_accept(error)) return connection;
        if (shutdown_requested()) break;  // EINVAL: the socket was shut down for us
        // Out of descriptors or memory (try_accept() logged it), the client stays queued and
        // accept() would fail again at once: sleep instead of spinning until some connection
        // closes. Any other error is unexpected: say so, and do not spin either.
        if (!out_of_resources(error)) log_error("accept: " + errno_text(error));
        wait_for(-1, 0, Clock::now() + kAcceptBackoff);
    }
    return std::nullopt;
}

void Listener::set_nonblocking() {
    const int flags = ::fcntl(fd_.get(), F_GETFL);
    if (flags < 0 || ::fcntl(fd_.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
        throw StartupError(1, "fcntl(O_NONBLOCK) on the listening socket: " + errno_text(errno));
    }
}

std::optional<Connection> Listener::try_accept(int& error) {
    while (true) {
        sockaddr_storage peer{};
        socklen_t len = sizeof peer;
        Fd client(::accept4(fd_.get(), reinterpret_cast<sockaddr*>(&peer), &len,
                            SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (client.valid()) {
            error = 0;
            auto connection = make_connection(std::move(client), peer);
            if (!connection) error = ENOMEM;
            return connection;
        }
        error = errno;
        // A signal, or a client that gave up before we got to it.
        if (error == EINTR || error == ECONNABORTED || error == EPROTO) continue;
        if (out_of_resources(error)) log_out_of_fds(error);
        return std::nullopt;
    }
}

IoStatus read_some(int fd, char* buffer, std::size_t size, Clock::time_point deadline,
                   std::size_t& received) {
    received = 0;
    while (true) {
        const ssize_t n = ::recv(fd, buffer, size, 0);
        if (n > 0) {
            received = static_cast<std::size_t>(n);
            return IoStatus::ok;
        }
        if (n == 0) return IoStatus::closed;
        if (errno == EINTR) continue;
        if (errno == ECONNRESET) return IoStatus::closed;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return IoStatus::error;
        if (const IoStatus s = wait_for(fd, POLLIN, deadline); s != IoStatus::ok) return s;
    }
}

namespace {

// Shared loop of send_all() and send_file(): `step` sends some bytes and returns what
// send()/sendfile() returned; waits for room while the peer keeps taking data.
template <class Step>
SendResult send_loop(int fd, std::uint64_t total, std::chrono::milliseconds idle_timeout,
                     Step step) {
    SendResult result;
    std::uint64_t& done = result.sent;
    // A reply under way when shutdown is requested gets kShutdownGrace more to finish.
    auto hard_deadline = Clock::time_point::max();
    while (done < total) {
        if (hard_deadline == Clock::time_point::max() && shutdown_requested()) {
            hard_deadline = Clock::now() + kShutdownGrace;
        }
        if (Clock::now() >= hard_deadline) return {IoStatus::stopped, done};
        const ssize_t n = step(done);
        if (n > 0) {
            done += static_cast<std::uint64_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            const bool gone = errno == EPIPE || errno == ECONNRESET;
            return {gone ? IoStatus::closed : IoStatus::error, done};
        }
        if (n == 0) return {IoStatus::error, done};  // the file shrank under us
        const auto deadline = std::min(Clock::now() + idle_timeout, hard_deadline);
        const IoStatus s =
            wait_for(fd, POLLOUT, deadline, hard_deadline == Clock::time_point::max());
        if (s == IoStatus::stopped) continue;  // the loop head starts the grace period
        if (s != IoStatus::ok) return {s, done};
    }
    return result;
}

}  // namespace

SendResult send_all(int fd, std::string_view data, std::chrono::milliseconds idle_timeout,
                    bool more_follows) {
    const int flags = MSG_NOSIGNAL | (more_follows ? MSG_MORE : 0);
    return send_loop(fd, data.size(), idle_timeout, [&](std::uint64_t done) {
        return ::send(fd, data.data() + done, data.size() - done, flags);
    });
}

SendResult send_file(int fd, int file_fd, std::uint64_t count,
                     std::chrono::milliseconds idle_timeout) {
    off_t offset = 0;
    return send_loop(fd, count, idle_timeout, [&](std::uint64_t done) {
        // sendfile moves at most ~2 GiB per call; the loop continues from `offset`.
        const std::size_t chunk =
            static_cast<std::size_t>(std::min<std::uint64_t>(count - done, 1u << 30));
        return ::sendfile(fd, file_fd, &offset, chunk);
    });
}

void close_gracefully(Fd fd, std::chrono::milliseconds linger) {
    if (!fd.valid()) return;
    char sink[4096];
    std::size_t drained = 0;
    if (linger.count() == 0) {
        // Only what has already arrived must go: unread bytes at close() mean a reset.
        while (drained < kLingerMaxBytes) {
            const ssize_t n = ::recv(fd.get(), sink, sizeof sink, MSG_DONTWAIT);
            if (n <= 0) break;
            drained += static_cast<std::size_t>(n);
        }
        return;
    }
    ::shutdown(fd.get(), SHUT_WR);
    const auto deadline = Clock::now() + linger;
    while (drained < kLingerMaxBytes) {
        std::size_t n = 0;
        // Stop at EOF, error, deadline or shutdown: all mean the reply is as safe as it gets.
        if (read_some(fd.get(), sink, sizeof sink, deadline, n) != IoStatus::ok) break;
        drained += n;
    }
}

SignalWatcher::SignalWatcher() {
    make_stop_pipe();
    // A client that vanishes mid-reply must cost an EPIPE, not the whole process.
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    ::sigaction(SIGPIPE, &ignore, nullptr);
    // Blocked here, before any other thread exists, so every thread inherits the mask and
    // the signals are only ever taken by sigwait() below: no code runs in a signal handler.
    // SIGUSR1 only wakes the watcher when the program ends (see ~SignalWatcher()).
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGUSR1);
    ::pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    thread_ = std::thread([this, signals] {
        int signal = 0;
        while (true) {
            if (::sigwait(&signals, &signal) != 0) continue;
            if (signal == SIGINT || signal == SIGTERM) {
                request_shutdown();
                return;
            }
            if (leaving_.load()) return;
        }
    });
}

SignalWatcher::~SignalWatcher() {
    leaving_.store(true);
    // Wake the watcher if it still waits: no stop signal came, or the shutdown was requested
    // by a direct request_shutdown(), which does not wake it. If it returned after a stop
    // signal, its thread is not joined yet, so the handle is valid and nothing is delivered.
    ::pthread_kill(thread_.native_handle(), SIGUSR1);
    thread_.join();
}

bool shutdown_requested() noexcept {
    return g_stop.load();
}

void request_shutdown() noexcept {
    g_stop.store(true);
    [[maybe_unused]] const ssize_t n = ::write(g_stop_pipe[1], "x", 1);
    // What wakes threads blocked in accept(): they return EINVAL from the shut socket.
    if (const int fd = g_listen_fd.load(); fd >= 0) ::shutdown(fd, SHUT_RD);
}

int shutdown_fd() noexcept {
    return g_stop_pipe[0];
}

}  // namespace lab
