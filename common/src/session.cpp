#include "lab/session.hpp"

#include <cstdio>
#include <exception>

#include <sys/socket.h>

#include "lab/log.hpp"

namespace lab {

namespace {

/// Bytes asked of the kernel per read while the request head arrives.
constexpr std::size_t kReadChunk = 4096;
/// Longest prefix of a rejected request's first line that goes into the access log.
constexpr std::size_t kLoggedLineMax = 1024;

// What reading the request head produced.
struct HeadRead {
    SessionOutcome outcome = SessionOutcome::served;
    ParseResult parsed;
    std::string bytes;
};

// Reads until a whole request head has arrived, the parser rejects it, or the deadline passes.
// The parser looks at each byte once, however the head is cut into segments.
HeadRead read_request_head(int fd, std::chrono::seconds timeout) {
    HeadRead head;
    RequestParser parser;
    const auto deadline = Clock::now() + timeout;
    while (true) {
        const std::size_t old_size = head.bytes.size();
        head.bytes.resize(old_size + kReadChunk);
        std::size_t n = 0;
        const IoStatus status =
            read_some(fd, head.bytes.data() + old_size, kReadChunk, deadline, n);
        head.bytes.resize(old_size + n);
        if (status != IoStatus::ok) {
            head.outcome =
                status == IoStatus::timeout ? SessionOutcome::timed_out : SessionOutcome::abandoned;
            // A head cut short by the client's half-close is rejected (400): it may still read.
            if (status == IoStatus::closed && !head.bytes.empty()) {
                head.outcome = SessionOutcome::rejected;
                parser.end_of_input(head.bytes);
            }
            head.parsed = parser.result();  // keeps the method, if the request line arrived
            return head;
        }
        const ParseResult& parsed = parser.parse(head.bytes);
        if (parsed.state == ParseState::incomplete) continue;
        head.outcome =
            parsed.state == ParseState::done ? SessionOutcome::served : SessionOutcome::rejected;
        head.parsed = parsed;
        return head;
    }
}

// The first line of what a client sent, cut short, for logging a rejected request.
std::string first_line(std::string_view bytes) {
    std::string_view line = bytes.substr(0, bytes.find('\n'));
    if (line.ends_with('\r')) line.remove_suffix(1);
    return std::string(line.substr(0, std::min(line.size(), kLoggedLineMax)));
}

// True when the client asked for the scoreboard (HTML) rather than the JSON: `?view=html`, or
// a browser's `Accept: text/html` without `?view=json`.
bool wants_html(const Request& request, const ServerContext& context) {
    if (!context.status_html) return false;
    const auto q = request.target.find('?');
    const std::string_view query =
        q == std::string::npos ? std::string_view() : std::string_view(request.target).substr(q);
    if (query.find("view=html") != std::string_view::npos) return true;
    if (query.find("view=json") != std::string_view::npos) return false;
    const std::string* accept = request.header("accept");
    return accept != nullptr && accept->find("text/html") != std::string::npos;
}

// The status page, for a client the User-Agent policy admits, from a loopback address unless
// the server was told to show it to anyone: it lists every client's address.
Response status_response(const Request& request, const std::string& peer_ip,
                         const ServerContext& context) {
    if (auto why = context.site.agents.refusal(request)) {
        return error_response(403, *why);
    }
    if (!context.status_remote && !is_loopback_address(peer_ip)) {
        return error_response(403, "The status page is shown only to clients on this machine.");
    }
    Response response;
    const bool html = wants_html(request, context);
    response.body = html ? context.status_html() : context.status_json();
    response.headers.push_back(
        {"Content-Type", html ? "text/html; charset=utf-8" : "application/json"});
    response.headers.push_back({"Cache-Control", "no-store"});
    response.headers.push_back({"Vary", "Accept"});
    return response;
}

// The reply to a complete request head: the status page, or whatever the site has.
Response answer(const Request& request, const std::string& peer_ip, const ServerContext& context) {
    if (!is_status_request(request, context)) {
        return handle_request(request, context.site, std::time(nullptr));
    }
    Response response = status_response(request, peer_ip, context);
    response.send_body = request.method != "HEAD";
    response.simple = request.simple();
    return response;
}

// What went out of a reply: all of it or not, and how much of its body (for the access log).
struct Sent {
    bool complete = false;
    std::uint64_t body_bytes = 0;
};

// Writes head and body; stops early if the client stalled past the limit or went away.
Sent send_response(int fd, const Response& response, std::chrono::milliseconds idle_timeout) {
    std::string head = serialize_head(response, std::time(nullptr));
    const std::size_t head_size = head.size();
    const bool body = response.body_bytes_sent() > 0;
    if (body && response.file.valid()) {
        // MSG_MORE lets the kernel put the head and the start of the file in one segment.
        if (send_all(fd, head, idle_timeout, true).status != IoStatus::ok) return {};
        const SendResult file =
            send_file(fd, response.file.get(), response.file_size, idle_timeout);
        return {file.status == IoStatus::ok, file.sent};
    }
    if (body) head += response.body;
    const SendResult all = send_all(fd, head, idle_timeout);
    return {all.status == IoStatus::ok, all.sent > head_size ? all.sent - head_size : 0};
}

}  // namespace

bool is_status_request(const Request& request, const ServerContext& context) {
    if (!context.status_json) return false;
    const std::string_view path =
        std::string_view(request.target).substr(0, request.target.find('?'));
    return path == "/server-status" && (request.method == "GET" || request.method == "HEAD");
}

bool Reclaimable::attach(int fd) noexcept {
    const std::lock_guard lock(mutex_);
    fd_ = fd;
    return state_ != State::reclaimed;
}

bool Reclaimable::settle() noexcept {
    const std::lock_guard lock(mutex_);
    if (state_ == State::waiting) state_ = State::settled;
    fd_ = -1;
    return state_ == State::settled;
}

bool Reclaimable::reclaim() noexcept {
    const std::lock_guard lock(mutex_);
    if (state_ != State::waiting) return false;
    state_ = State::reclaimed;
    // Under the lock: the session cannot have closed the socket, it has not settled yet.
    if (fd_ >= 0) ::shutdown(fd_, SHUT_RD);
    return true;
}

Response respond(const ParseResult& parsed, bool timed_out, const std::string& peer_ip,
                 const ServerContext& context) {
    if (parsed.state == ParseState::done) return answer(parsed.request, peer_ip, context);
    const bool rejected = !timed_out && parsed.state == ParseState::failed;
    Response response = rejected ? error_response(parsed.status, parsed.reason)
                                 : error_response(408, "The request did not arrive in time.");
    // Once the method was read, a HEAD is answered as one: headers only, whatever went wrong.
    if (parsed.request.method == "HEAD") response.send_body = false;
    return response;
}

Response reclaimed_response(const ParseResult& parsed) {
    Response response = error_response(408,
                                       "The server needed this connection for another client: "
                                       "the request did not arrive in time.");
    if (parsed.request.method == "HEAD") response.send_body = false;
    return response;
}

std::string logged_request_line(const ParseResult& parsed, std::string_view bytes) {
    if (parsed.state == ParseState::done) return parsed.request.request_line;
    return first_line(bytes);
}

ServerContext make_context(const Options& options) {
    set_access_log(!options.quiet);
    ServerContext context;
    context.site.root = DocumentRoot(options.root);
    context.site.agents = AgentPolicy{options.allow_agents, options.deny_agents};
    context.timeout = options.timeout;
    context.status_remote = options.status_remote;
    return context;
}

namespace {

// Tells the scoreboard where the connection is, if anyone keeps count of it.
void report(Reclaimable* reclaimable, Phase phase) noexcept {
    if (reclaimable != nullptr) reclaimable->set_phase(phase);
}

// The 408 for a connection whose slot went to another client, and its close.
SessionOutcome give_up_slot(Connection& connection, const HeadRead& head,
                            const ServerContext& context, Reclaimable* reclaimable) {
    const Response response = reclaimed_response(head.parsed);
    report(reclaimable, Phase::sending);
    const Sent sent = send_response(connection.fd.get(), response, context.timeout);
    log_access(connection.peer_ip, logged_request_line(head.parsed, head.bytes), 408,
               sent.body_bytes);
    report(reclaimable, Phase::closing);
    // Its reading side is shut already; what arrived is dropped and the socket closes.
    close_gracefully(std::move(connection.fd), std::chrono::milliseconds(0));
    return SessionOutcome::reclaimed;
}

// serve_connection() without its failure boundary.
SessionOutcome serve(Connection& connection, const ServerContext& context,
                     Reclaimable* reclaimable) {
    const int fd = connection.fd.get();
    HeadRead head;
    if (reclaimable == nullptr || reclaimable->attach(fd)) {
        head = read_request_head(fd, context.timeout);
    }
    // From here on the connection cannot be reclaimed; if it was, the slot is gone.
    if (reclaimable != nullptr && !reclaimable->settle()) {
        return give_up_slot(connection, head, context, reclaimable);
    }
    // Silence gets a silent close, and so does a client that left or a server that stops.
    if (head.outcome == SessionOutcome::abandoned) return SessionOutcome::abandoned;
    const bool timed_out = head.outcome == SessionOutcome::timed_out;
    if (timed_out && head.bytes.empty()) return SessionOutcome::timed_out;
    // The status page leaves out the connection that asks for it, and does not count it.
    const bool status =
        head.parsed.state == ParseState::done && is_status_request(head.parsed.request, context);
    report(reclaimable, status ? Phase::status : Phase::sending);
    const Response response = respond(head.parsed, timed_out, connection.peer_ip, context);
    const Sent sent = send_response(fd, response, context.timeout);
    if (!status) report(reclaimable, Phase::closing);
    // An interrupted reply is logged with its status and the part of the body that went out.
    log_access(connection.peer_ip, logged_request_line(head.parsed, head.bytes), response.status,
               sent.body_bytes);
    // An error reply may leave request bytes unread; wait for the client before closing so
    // that the kernel does not reset the connection under the reply.
    close_gracefully(std::move(connection.fd),
                     response.status >= 400 ? kLingerTimeout : std::chrono::milliseconds(0));
    if (!sent.complete) return SessionOutcome::abandoned;
    return status ? SessionOutcome::status_page : head.outcome;
}

/// The reply for a client the server has no thread or memory for. Fixed text, so sending it
/// needs no allocation at the moment allocations fail.
constexpr std::string_view kUnavailableReply =
    "HTTP/1.0 503 Service Unavailable\r\n"
    "Server: lab-httpd/1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Length: 50\r\n"
    "Retry-After: 1\r\n"
    "Connection: close\r\n"
    "\r\n"
    "The server is out of resources. Try again later.\r\n";

}  // namespace

SessionOutcome serve_connection(Connection connection, const ServerContext& context,
                                Reclaimable* reclaimable) noexcept {
    try {
        return serve(connection, context, reclaimable);
    } catch (const std::exception& error) {
        // Out of memory, most likely: this connection ends (its socket closes with
        // `connection`), the server goes on.
        log_dropped(connection.peer_ip, error.what());
    } catch (...) {
        log_dropped(connection.peer_ip, "unknown exception");
    }
    // Settled before the socket closes with `connection`: a reclaim must never reach a
    // descriptor number that a new connection may already be using.
    if (reclaimable != nullptr) reclaimable->settle();
    return SessionOutcome::abandoned;
}

void send_unavailable(Connection connection) noexcept {
    // A fresh socket's send buffer is empty, so this cannot block; if it fails, the close says
    // as much as a reply could.
    [[maybe_unused]] const ssize_t sent =
        ::send(connection.fd.get(), kUnavailableReply.data(), kUnavailableReply.size(),
               MSG_NOSIGNAL | MSG_DONTWAIT);
    close_gracefully(std::move(connection.fd), std::chrono::milliseconds(0));
    log_access(connection.peer_ip, "", 503, 0);
}

void announce(std::string_view stage, const Listener& listener, const Options& options) {
    const bool v6 = listener.address().find(':') != std::string::npos;
    std::printf("%.*s listening on http://%s%s%s:%u/ (root %s)\n", static_cast<int>(stage.size()),
                stage.data(), v6 ? "[" : "", listener.address().c_str(), v6 ? "]" : "",
                static_cast<unsigned>(listener.port()), options.root.c_str());
    (void)std::fflush(stdout);
}

}  // namespace lab
