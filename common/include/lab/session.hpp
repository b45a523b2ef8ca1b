/// @file session.hpp
/// @brief One connection from first byte to close: read, parse, handle, send, log.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include "lab/handler.hpp"
#include "lab/net.hpp"
#include "lab/options.hpp"

namespace lab {

/// @brief What every connection handler shares, read-only, for the server's lifetime.
struct ServerContext {
    Site site;                                             ///< Where files come from.
    std::chrono::seconds timeout{kDefaultTimeoutSeconds};  ///< Read deadline and send idle limit.
    /// @brief When set, `GET /server-status` answers with this JSON instead of a file.
    std::function<std::string()> status_json;
    /// @brief When set, the scoreboard: `/server-status` asked for as HTML (`Accept:
    /// text/html` or `?view=html`) answers with this instead of status_json.
    std::function<std::string()> status_html;
    /// @brief Show the status page to clients that are not on a loopback address too.
    bool status_remote = false;
};

/// @brief How a connection ended, for servers that keep statistics.
enum class SessionOutcome {
    served,       ///< A request was parsed and answered (any status from the handler).
    rejected,     ///< The request was malformed or too large and got an error status.
    timed_out,    ///< The client did not send a whole request head before the deadline.
    abandoned,    ///< The client left, the server is stopping, or the send failed.
    reclaimed,    ///< Another client needed the slot before this one's head arrived (408).
    status_page,  ///< The status page was shown: not counted as served, so it never counts itself.
};

/// @brief Where a connection is, for the scoreboard of /server-status.
enum class Phase : std::uint8_t {
    reading,  ///< Waiting for (the rest of) its request head.
    sending,  ///< Sending its reply.
    closing,  ///< Reply done or given up: lingering or closing.
    status,   ///< Answering /server-status itself, which the page leaves out.
};

/// @brief A connection that another thread may end while it still waits for its request head.
///
/// It also carries the connection's Phase for the scoreboard: the session stores it at each
/// step (an atomic, so the request path takes no lock for it) and the status page reads it.
///
/// Stage 3's `--reclaim-idle` uses it: when the server is full, the accepting thread takes
/// the slot of the oldest connection that has not sent a whole request head yet. The two
/// sides meet here, under one small lock: the session settles the connection once its head
/// has arrived (or it is ending), and from then on it can no longer be reclaimed; a reclaim
/// that comes first shuts the socket's reading side, which wakes the session's read at once.
class Reclaimable {
  public:
    /// @brief A connection still waiting for its head, with no socket attached yet.
    Reclaimable() = default;
    /// @brief Not copyable: the two sides share this very object.
    Reclaimable(const Reclaimable&) = delete;
    /// @brief Not copy-assignable.
    Reclaimable& operator=(const Reclaimable&) = delete;

    /// @brief The session names its socket; false if the connection was reclaimed already.
    bool attach(int fd) noexcept;
    /// @brief The session is done waiting (head complete, or leaving); false if reclaimed.
    bool settle() noexcept;
    /// @brief Takes the connection if it still waits, and wakes its reader; else false.
    bool reclaim() noexcept;
    /// @brief The session moved on to @p phase: one relaxed atomic store, no lock.
    void set_phase(Phase phase) noexcept { phase_.store(phase, std::memory_order_relaxed); }
    /// @brief The phase the session last reported (the status page reads it).
    [[nodiscard]] Phase phase() const noexcept { return phase_.load(std::memory_order_relaxed); }

  private:
    enum class State { waiting, settled, reclaimed };
    std::mutex mutex_;
    State state_ = State::waiting;
    int fd_ = -1;
    std::atomic<Phase> phase_{Phase::reading};
};

/// @brief True for `GET /server-status` (or HEAD) on a server that has a status page.
[[nodiscard]] bool is_status_request(const Request& request, const ServerContext& context);

/// @brief Builds the shared context from parsed options.
[[nodiscard]] ServerContext make_context(const Options& options);

/// @brief The reply to what arrived of a request head.
///
/// A complete head (@p parsed done) gets the status page or whatever the site has; a rejected
/// one gets the parser's status; one cut off by the deadline (@p timed_out) gets 408. Once the
/// method was read, a HEAD's reply carries no body whatever went wrong.
[[nodiscard]] Response respond(const ParseResult& parsed, bool timed_out,
                               const std::string& peer_ip, const ServerContext& context);

/// @brief The 408 for a connection whose slot was reclaimed for another client.
[[nodiscard]] Response reclaimed_response(const ParseResult& parsed);

/// @brief What the access log shows for a request: its request line, or the start of the
/// first line that arrived when there was no valid request.
[[nodiscard]] std::string logged_request_line(const ParseResult& parsed, std::string_view bytes);

/// @brief Serves the single request of @p connection and closes it.
///
/// This is a connection's failure boundary: whatever goes wrong inside (a bad request, a
/// client that leaves, memory running out) ends this connection only, and never throws.
///
/// With @p reclaimable, another thread may end the connection while its head is still on
/// the way: the client then gets 408 and the outcome is `reclaimed`.
SessionOutcome serve_connection(Connection connection, const ServerContext& context,
                                Reclaimable* reclaimable = nullptr) noexcept;

/// @brief Answers 503 to a client the server has no thread or memory for, and closes it.
///
/// Sends a fixed reply without waiting and without allocating, so it works when nothing
/// else does.
void send_unavailable(Connection connection) noexcept;

/// @brief Prints `<stage> listening on http://HOST:PORT/ (root DIR)` and flushes it.
void announce(std::string_view stage, const Listener& listener, const Options& options);

}  // namespace lab
