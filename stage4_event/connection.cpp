#include "connection.hpp"

#include <algorithm>
#include <cerrno>
#include <ctime>

#include <sys/sendfile.h>
#include <sys/socket.h>

#include "lab/log.hpp"
#include "refusal.hpp"

namespace lab {

namespace {

/// Bytes asked of the kernel per recv() while the head arrives.
constexpr std::size_t kReadChunk = 4096;
/// Most bytes one advance() hands to sendfile() before letting the loop serve others.
constexpr std::size_t kSendSlice = std::size_t{1} << 20;

// True when a socket call failed only because it would have had to wait.
bool would_block(int err) {
    return err == EAGAIN || err == EWOULDBLOCK;
}

}  // namespace

EventConnection::EventConnection(Connection connection, ConnectionLimiter::Slot slot,
                                 const ServerContext& context, Counters& counters,
                                 Clock::time_point now)
    : connection_(std::move(connection)),
      slot_(std::move(slot)),
      context_(context),
      counters_(counters),
      deadline_(now + context.timeout) {
    // The whole head must arrive within -t of the accept, however it trickles in. A slot
    // reclaimed before we even started is told so on the first advance().
    if (Reclaimable* r = slot_.reclaimable(); r != nullptr && !r->attach(fd())) {
        deadline_ = now;
    }
}

EventConnection::EventConnection(Connection connection, Response response,
                                 const ServerContext& context, Counters& counters,
                                 Clock::time_point now)
    : connection_(std::move(connection)),
      context_(context),
      counters_(counters),
      linger_for_(kRefusalLinger) {
    start_reply(std::move(response), now);
}

Interest EventConnection::advance(Clock::time_point now) {
    switch (state_) {
        case State::reading:
            return read_head(now);
        case State::sending:
            return send_reply(now);
        case State::lingering:
            return linger(now);
        case State::closed:
            break;
    }
    return Interest::close;
}

Interest EventConnection::stop(Clock::time_point now) {
    if (state_ != State::sending) return close();  // nobody waits on a half-read head now
    hard_deadline_ = std::min(hard_deadline_, now + kShutdownGrace);
    return advance(now);
}

Clock::time_point EventConnection::deadline() const noexcept {
    return std::min(deadline_, hard_deadline_);
}

// Reads what has arrived and feeds the parser; replies once the head is complete or bad.
Interest EventConnection::read_head(Clock::time_point now) {
    // Read into the stack first: an idle connection then holds no buffer at all, which is
    // what lets ten thousand of them fit in a few megabytes.
    char chunk[kReadChunk];
    while (true) {
        const ssize_t n = ::recv(fd(), chunk, sizeof chunk, 0);
        if (n > 0) {
            bytes_.append(chunk, static_cast<std::size_t>(n));
            if (parser_.parse(bytes_).state != ParseState::incomplete) {
                // recv() stops short of the buffer only when the socket has nothing more.
                nothing_unread_ = static_cast<std::size_t>(n) < sizeof chunk;
                return head_ended(false, now);
            }
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && would_block(errno)) {
            if (now >= deadline()) return head_ended(true, now);
            return Interest::read;
        }
        // The client closed or reset — or a reclaim shut our reading side.
        if (lost_slot()) return give_up_slot(now);
        // A head cut short by the client's half-close gets its 400: the client may still read.
        if (n == 0 && parser_.end_of_input(bytes_).state == ParseState::failed) {
            return head_ended(false, now);
        }
        return close();
    }
}

// Settles the slot: from now on it cannot be reclaimed. True if a reclaim took it first.
bool EventConnection::lost_slot() noexcept {
    Reclaimable* reclaimable = slot_.reclaimable();
    return reclaimable != nullptr && !reclaimable->settle();
}

// Tells the scoreboard where this connection is (a refused one holds no slot: nobody asks).
void EventConnection::report(Phase phase) noexcept {
    if (Reclaimable* reclaimable = slot_.reclaimable(); reclaimable != nullptr) {
        reclaimable->set_phase(phase);
    }
}

// The slot went to another client: a 408, and a close without lingering.
Interest EventConnection::give_up_slot(Clock::time_point now) {
    report(Phase::sending);
    start_reply(reclaimed_response(parser_.result()), now);
    linger_for_ = std::chrono::milliseconds(0);
    return send_reply(now);
}

// The head is complete, rejected, or out of time: settles the slot and starts the reply.
Interest EventConnection::head_ended(bool timed_out, Clock::time_point now) {
    if (lost_slot()) return give_up_slot(now);
    const ParseResult& parsed = parser_.result();
    if (timed_out) {
        ++counters_.timed_out;
        // Silence gets a silent close; a request cut off midway gets told why.
        if (bytes_.empty()) return close();
    }
    // The status page leaves out the connection that asks for it, and does not count it.
    status_page_ = parsed.state == ParseState::done && is_status_request(parsed.request, context_);
    report(status_page_ ? Phase::status : Phase::sending);
    counted_as_served_ = parsed.state == ParseState::done && !status_page_;
    start_reply(respond(parsed, timed_out, connection_.peer_ip, context_), now);
    return send_reply(now);
}

// Serializes the reply and sets up the body: in memory after the head, or from the file.
void EventConnection::start_reply(Response response, Clock::time_point now) {
    response_ = std::move(response);
    logged_line_ = logged_request_line(parser_.result(), bytes_);
    wire_ = serialize_head(response_, std::time(nullptr));
    head_size_ = wire_.size();
    if (response_.body_bytes_sent() > 0) {
        if (response_.file.valid()) {
            file_left_ = response_.file_size;
        } else {
            wire_ += response_.body;
        }
    }
    bytes_ = std::string();  // the request is no longer needed
    state_ = State::sending;
    deadline_ = now + context_.timeout;
}

// Sends what the socket takes now: the head, then the file with sendfile().
Interest EventConnection::send_reply(Clock::time_point now) {
    // Out of time before trying: a client that took nothing for -t is cut even if the socket
    // would now accept a little more (below epoll's writable mark), as in the blocking stages.
    if (now >= deadline()) return finish_reply(false, now);
    bool progress = false;
    while (wire_sent_ < wire_.size()) {
        // MSG_MORE lets the kernel put the head and the start of the file in one segment.
        const int flags = MSG_NOSIGNAL | (file_left_ > 0 ? MSG_MORE : 0);
        const ssize_t n = ::send(fd(), wire_.data() + wire_sent_, wire_.size() - wire_sent_, flags);
        if (n > 0) {
            wire_sent_ += static_cast<std::size_t>(n);
            progress = true;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && would_block(errno)) break;
        return finish_reply(false, now);
    }
    std::size_t slice = kSendSlice;
    while (wire_sent_ == wire_.size() && file_left_ > 0 && slice > 0) {
        const std::size_t chunk = std::min<std::uint64_t>(file_left_, slice);
        const ssize_t n = ::sendfile(fd(), response_.file.get(), &file_offset_, chunk);
        if (n > 0) {
            file_left_ -= static_cast<std::uint64_t>(n);
            slice -= static_cast<std::size_t>(n);
            progress = true;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && would_block(errno)) break;
        return finish_reply(false, now);  // an error, or the file shrank under us (n == 0)
    }
    if (wire_sent_ == wire_.size() && file_left_ == 0) return finish_reply(true, now);
    // The client must take some data at least every -t: an idle limit, not a total one.
    if (progress) deadline_ = now + context_.timeout;
    if (now >= deadline()) return finish_reply(false, now);
    // A slice used up with the socket still writable: level-triggered epoll calls again.
    nothing_unread_ = false;  // the client may send more while the reply waits
    return Interest::write;
}

// Bytes of the body the kernel has taken so far: from wire_ past the head, then from the file.
std::uint64_t EventConnection::body_bytes_out() const noexcept {
    const auto from_file = static_cast<std::uint64_t>(file_offset_);  // sendfile() moves it
    return (wire_sent_ > head_size_ ? wire_sent_ - head_size_ : 0) + from_file;
}

// Logs the request (an interrupted reply with the part of its body that went out); then
// lingers after an error reply, or closes.
Interest EventConnection::finish_reply(bool sent, Clock::time_point now) {
    const int status = response_.status;
    log_access(connection_.peer_ip, logged_line_, status, body_bytes_out());
    if (sent && counted_as_served_) ++counters_.served;
    if (sent && status_page_) ++counters_.status_views;
    response_ = Response();  // closes the file
    wire_ = std::string();
    if (!sent) return close();
    // An error reply may leave request bytes unread: closing now would reset the connection
    // under the reply. So stop sending and read until the client closes, or for a while. A
    // success only drops what has already arrived, as close_gracefully() does; if the read
    // that completed the head came back short and the reply went out at once, nothing has:
    // no recv() just to hear EAGAIN (nginx, too, reads no more after a short read).
    if (status < 400) {
        if (nothing_unread_) return close();
        linger_for_ = std::chrono::milliseconds(0);
    }
    if (linger_for_ > std::chrono::milliseconds(0)) ::shutdown(fd(), SHUT_WR);
    state_ = State::lingering;
    if (!status_page_) report(Phase::closing);  // the status page stays out of sight
    deadline_ = now + linger_for_;
    return linger(now);
}

// Reads and drops what the client still sends, until it closes or the linger time is over.
Interest EventConnection::linger(Clock::time_point now) {
    char sink[4096];
    while (drained_ < kLingerMaxBytes) {
        const ssize_t n = ::recv(fd(), sink, sizeof sink, 0);
        if (n > 0) {
            drained_ += static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && would_block(errno) && now < deadline()) return Interest::read;
        break;  // closed, failed, or out of time
    }
    return close();
}

// Done: the socket closes and the slot is given back when this object is destroyed.
Interest EventConnection::close() {
    state_ = State::closed;
    static_cast<void>(lost_slot());  // settled before the socket closes
    return Interest::close;
}

}  // namespace lab
