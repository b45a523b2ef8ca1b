#include "lab/session.hpp"

#include <cstdio>

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
HeadRead read_request_head(int fd, std::chrono::seconds timeout) {
    HeadRead head;
    const auto deadline = Clock::now() + timeout;
    while (true) {
        const std::size_t old_size = head.bytes.size();
        head.bytes.resize(old_size + kReadChunk);
        std::size_t n = 0;
        const IoStatus status =
            read_some(fd, head.bytes.data() + old_size, kReadChunk, deadline, n);
        head.bytes.resize(old_size + n);
        if (status == IoStatus::timeout) {
            head.outcome = SessionOutcome::timed_out;
            return head;
        }
        if (status != IoStatus::ok) {
            head.outcome = SessionOutcome::abandoned;
            return head;
        }
        head.parsed = parse_request(head.bytes);
        if (head.parsed.state == ParseState::done) return head;
        if (head.parsed.state == ParseState::failed) {
            head.outcome = SessionOutcome::rejected;
            return head;
        }
    }
}

// The first line of what a client sent, cut short, for logging a rejected request.
std::string first_line(std::string_view bytes) {
    std::string_view line = bytes.substr(0, bytes.find('\n'));
    if (line.ends_with('\r')) line.remove_suffix(1);
    return std::string(line.substr(0, std::min(line.size(), kLoggedLineMax)));
}

// Answers `GET /server-status` from the context's JSON source, when the server has one.
bool is_status_request(const Request& request, const ServerContext& context) {
    if (!context.status_json) return false;
    const std::string_view path =
        std::string_view(request.target).substr(0, request.target.find('?'));
    return path == "/server-status" && (request.method == "GET" || request.method == "HEAD");
}

Response status_response(const Request& request, const ServerContext& context) {
    Response response;
    response.body = context.status_json();
    response.headers.push_back({"Content-Type", "application/json"});
    response.headers.push_back({"Cache-Control", "no-store"});
    response.send_body = request.method != "HEAD";
    response.simple = request.simple();
    return response;
}

// Writes head and body; false if the client stalled past the limit or went away.
bool send_response(int fd, const Response& response, std::chrono::milliseconds idle_timeout) {
    std::string head = serialize_head(response, std::time(nullptr));
    const bool body = response.body_bytes_sent() > 0;
    if (body && response.file.valid()) {
        // MSG_MORE lets the kernel put the head and the start of the file in one segment.
        if (send_all(fd, head, idle_timeout, true) != IoStatus::ok) return false;
        return send_file(fd, response.file.get(), response.file_size, idle_timeout) == IoStatus::ok;
    }
    if (body) head += response.body;
    return send_all(fd, head, idle_timeout) == IoStatus::ok;
}

}  // namespace

ServerContext make_context(const Options& options) {
    set_access_log(!options.quiet);
    ServerContext context;
    context.site.root = options.root;
    context.site.agents = AgentPolicy{options.allow_agents, options.deny_agents};
    context.timeout = options.timeout;
    return context;
}

SessionOutcome serve_connection(Connection connection, const ServerContext& context) {
    const int fd = connection.fd.get();
    HeadRead head = read_request_head(fd, context.timeout);
    Response response;
    std::string logged_line;
    switch (head.outcome) {
        case SessionOutcome::abandoned:
            return SessionOutcome::abandoned;
        case SessionOutcome::timed_out:
            // Silence gets a silent close; a request cut off midway gets told why.
            if (head.bytes.empty()) return SessionOutcome::timed_out;
            response = error_response(408, "The request did not arrive in time.");
            logged_line = first_line(head.bytes);
            break;
        case SessionOutcome::rejected:
            response = error_response(head.parsed.status, head.parsed.reason);
            logged_line = first_line(head.bytes);
            break;
        case SessionOutcome::served: {
            const Request& request = head.parsed.request;
            response = is_status_request(request, context)
                           ? status_response(request, context)
                           : handle_request(request, context.site, std::time(nullptr));
            logged_line = request.request_line;
            break;
        }
    }
    const bool sent = send_response(fd, response, context.timeout);
    log_access(connection.peer_ip, logged_line, response.status,
               sent ? response.body_bytes_sent() : 0);
    // An error reply may leave request bytes unread; wait for the client before closing so
    // that the kernel does not reset the connection under the reply.
    close_gracefully(std::move(connection.fd),
                     response.status >= 400 ? kLingerTimeout : std::chrono::milliseconds(0));
    if (!sent) return SessionOutcome::abandoned;
    return head.outcome;
}

void announce(std::string_view stage, const Listener& listener, const Options& options) {
    const bool v6 = listener.address().find(':') != std::string::npos;
    std::printf("%.*s listening on http://%s%s%s:%u/ (root %s)\n", static_cast<int>(stage.size()),
                stage.data(), v6 ? "[" : "", listener.address().c_str(), v6 ? "]" : "",
                static_cast<unsigned>(listener.port()), options.root.c_str());
    (void)std::fflush(stdout);
}

}  // namespace lab
