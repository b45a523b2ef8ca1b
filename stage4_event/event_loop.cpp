#include "event_loop.hpp"

#include <array>
#include <cerrno>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include <sys/epoll.h>
#include <sys/resource.h>

#include "lab/log.hpp"
#include "lab/options.hpp"
#include "refusal.hpp"

namespace lab {

namespace {

/// Most events taken from epoll per wait.
constexpr int kMaxEvents = 256;

// The epoll events that stand for an interest.
std::uint32_t events_for(Interest interest) {
    return interest == Interest::write ? EPOLLOUT : EPOLLIN;
}

// Adds, changes or removes @p fd in @p epoll; false (errno set) if the kernel refused.
bool control(int epoll, int op, int fd, std::uint32_t events, std::uint64_t id) {
    epoll_event event{};
    event.events = events;
    event.data.u64 = id;
    return ::epoll_ctl(epoll, op, fd, &event) == 0;
}

}  // namespace

EventLoop::EventLoop(const Shared& shared)
    : shared_(shared), epoll_(::epoll_create1(EPOLL_CLOEXEC)) {
    if (!epoll_.valid()) throw StartupError(1, "epoll_create1: " + errno_text(errno));
    // EPOLLEXCLUSIVE: of all the loops waiting on the listener, one is woken per client.
    if (!control(epoll_.get(), EPOLL_CTL_ADD, shared_.listener.fd(), EPOLLIN | EPOLLEXCLUSIVE,
                 kListenerId) ||
        !control(epoll_.get(), EPOLL_CTL_ADD, shutdown_fd(), EPOLLIN, kStopId)) {
        throw StartupError(1, "epoll_ctl: " + errno_text(errno));
    }
}

void EventLoop::run() {
    std::array<epoll_event, kMaxEvents> events{};
    while (!(stopping_ && connections_.empty())) {
        const int n =
            ::epoll_wait(epoll_.get(), events.data(), kMaxEvents, timers_.wait_ms(Clock::now()));
        if (n < 0 && errno != EINTR) log_error("epoll_wait: " + errno_text(errno));
        const auto now = Clock::now();
        for (int i = 0; i < n; ++i) {
            const std::uint64_t id = events[static_cast<std::size_t>(i)].data.u64;
            if (id == kListenerId) {
                accept_client(now);
            } else if (id == kStopId) {
                begin_shutdown(now);
            } else {
                drive(id, now, false);
            }
        }
        expire(now);
    }
}

// Accepts one client and gives it a connection. One per report, as nginx does by default:
// the listener is level-triggered, so while more clients are queued the next epoll_wait()
// reports it again at once, and no accept4() is spent on learning that the queue is empty.
void EventLoop::accept_client(Clock::time_point now) {
    if (!accepting_ || stopping_) return;
    int error = 0;
    std::optional<Connection> client;
    ConnectionLimiter::Admission admission;
    {
        // Two loops must not accept clients 1 and 2 and then ask the limiter for 2 first:
        // the last slot would go to the later client.
        const std::lock_guard order(shared_.admission_order);
        client = shared_.listener.try_accept(error);
        if (client) admission = shared_.limiter.try_acquire(client->peer_ip);
    }
    if (!client) {
        if (out_of_resources(error)) {
            pause_accepting(now);  // no busy loop: the listener stays readable meanwhile
        }
        return;  // EAGAIN: another loop took the client (or the listener was shut down)
    }
    admit(std::move(*client), std::move(admission), now);
    if (++accepted_ % kRotateEvery == 0) rotate_listener();
}

// Serves an admitted client, or tells it 429/503 at once, as stage 3's accept loop does.
void EventLoop::admit(Connection client, ConnectionLimiter::Admission admission,
                      Clock::time_point now) {
    ++shared_.counters.accepted;
    try {
        if (admission.verdict == ConnectionLimiter::Verdict::admitted) {
            // Not read at once: the loop is usually woken by the handshake, before the client
            // has sent its request, and a read now would mostly fail with EAGAIN. epoll says
            // when the request is there.
            add(std::make_unique<EventConnection>(std::move(client), std::move(admission.slot),
                                                  shared_.context, shared_.counters, now),
                Interest::read);
            return;
        }
        const bool per_client = admission.verdict == ConnectionLimiter::Verdict::client_full;
        ++(per_client ? shared_.counters.refused_per_client : shared_.counters.refused_total);
        // Refused sockets linger to read the client's request before closing, so that no
        // reset destroys the reply; at most kMaxLingering at once per loop, oldest closed first.
        while (refused_.size() >= kMaxLingering) {
            forget(refused_.front());
            refused_.pop_front();
        }
        auto refusal = std::make_unique<EventConnection>(std::move(client),
                                                         refusal_response(per_client ? 429 : 503),
                                                         shared_.context, shared_.counters, now);
        const Interest next = step(*refusal, now, false);  // the reply goes out at once
        if (next == Interest::close) return;
        const std::uint64_t id = add(std::move(refusal), next);
        if (id != 0) refused_.push_back(id);
    } catch (const std::exception&) {
        // No memory for this client: the fixed 503 still goes out (if it was not moved yet).
        if (client.fd.valid()) send_unavailable(std::move(client));
    }
}

// Registers a connection with epoll, waiting for @p first; its id, or 0 if the kernel refused.
std::uint64_t EventLoop::add(std::unique_ptr<EventConnection> connection, Interest first) {
    const std::uint64_t id = next_id_++;
    if (!control(epoll_.get(), EPOLL_CTL_ADD, connection->fd(), events_for(first), id)) {
        return 0;  // the kernel is out of memory: this connection closes
    }
    auto [entry, added] = connections_.emplace(id, Watched{std::move(connection), first});
    settle(id, entry->second, first);
    return id;
}

// Lets one connection progress (or stop), then follows what it waits for next.
void EventLoop::drive(std::uint64_t id, Clock::time_point now, bool stopping) {
    const auto found = connections_.find(id);
    if (found == connections_.end()) return;  // closed earlier in this round
    Watched& watched = found->second;
    settle(id, watched, step(*watched.connection, now, stopping));
}

// One step of one connection: its failure boundary. Out of memory, most likely, whatever
// escapes ends this connection only (Interest::close), and the others go on.
Interest EventLoop::step(EventConnection& connection, Clock::time_point now, bool stopping) {
    try {
        return stopping ? connection.stop(now) : connection.advance(now);
    } catch (const std::exception& error) {
        log_dropped(connection.peer(), error.what());
        return Interest::close;
    }
}

// Closes a finished connection, or updates its epoll interest and its timer.
void EventLoop::settle(std::uint64_t id, Watched& watched, Interest next) {
    if (next == Interest::close) {
        forget(id);
        return;
    }
    if (next != watched.interest &&
        control(epoll_.get(), EPOLL_CTL_MOD, watched.connection->fd(), events_for(next), id)) {
        watched.interest = next;
    }
    // Only a deadline that moves earlier is rescheduled at once; one that moves later is
    // found when the entry comes due, which saves touching the heap on every read or write.
    const auto deadline = watched.connection->deadline();
    if (deadline < watched.scheduled) {
        timers_.schedule(id, deadline);
        watched.scheduled = deadline;
    }
}

// Destroys a connection (closing its socket also removes it from epoll) and its timer entry,
// so that the heap only ever holds open connections, whatever the timeout.
void EventLoop::forget(std::uint64_t id) {
    const auto found = connections_.find(id);
    if (found == connections_.end()) return;
    if (found->second.scheduled != Clock::time_point::max()) timers_.cancel(id);
    connections_.erase(found);
}

// Handles every deadline that has passed, and resumes accepting after a pause.
void EventLoop::expire(Clock::time_point now) {
    for (const TimerQueue::Entry& due : timers_.pop_due(now)) {
        if (due.id == kResumeTimerId) {
            if (!accepting_ && !stopping_) resume_accepting();
            continue;
        }
        const auto found = connections_.find(due.id);
        if (found == connections_.end()) continue;
        Watched& watched = found->second;
        watched.scheduled = Clock::time_point::max();
        if (watched.connection->deadline() <= now) {
            drive(due.id, now, false);
        } else {
            settle(due.id, watched, watched.interest);  // moved later: schedule it again
        }
    }
}

// Out of descriptors: stop watching the listener for kAcceptBackoff instead of spinning.
void EventLoop::pause_accepting(Clock::time_point now) {
    control(epoll_.get(), EPOLL_CTL_DEL, shared_.listener.fd(), 0, kListenerId);
    accepting_ = false;
    resume_at_ = now + kAcceptBackoff;
    timers_.schedule(kResumeTimerId, resume_at_);
}

void EventLoop::resume_accepting() {
    accepting_ = control(epoll_.get(), EPOLL_CTL_ADD, shared_.listener.fd(),
                         EPOLLIN | EPOLLEXCLUSIVE, kListenerId);
    if (!accepting_) pause_accepting(Clock::now());
}

// Registers the listener again, which puts this loop last among those the kernel wakes for a
// new client: the loops take turns instead of the first one taking nearly all of them.
void EventLoop::rotate_listener() {
    control(epoll_.get(), EPOLL_CTL_DEL, shared_.listener.fd(), 0, kListenerId);
    resume_accepting();  // if the kernel refuses, accepting pauses and retries later
}

// SIGINT/SIGTERM: accept no more, end what waits on clients, give replies a short grace.
void EventLoop::begin_shutdown(Clock::time_point now) {
    if (stopping_) return;
    stopping_ = true;
    if (accepting_) control(epoll_.get(), EPOLL_CTL_DEL, shared_.listener.fd(), 0, kListenerId);
    control(epoll_.get(), EPOLL_CTL_DEL, shutdown_fd(), 0, kStopId);  // it stays readable
    std::vector<std::uint64_t> ids;
    ids.reserve(connections_.size());
    for (const auto& [id, watched] : connections_) ids.push_back(id);
    for (const std::uint64_t id : ids) drive(id, now, true);
}

int raise_descriptor_limit() noexcept {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return -1;
    if (limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) ::getrlimit(RLIMIT_NOFILE, &limit);
    }
    return static_cast<int>(std::min<rlim_t>(limit.rlim_cur, 1 << 30));
}

}  // namespace lab
