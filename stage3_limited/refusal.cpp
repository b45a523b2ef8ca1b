#include "refusal.hpp"

#include <algorithm>
#include <cerrno>
#include <new>
#include <vector>

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lab/log.hpp"
#include "lab/session.hpp"

namespace lab {

Response refusal_response(int status) {
    Response response = error_response(
        status, status == 429 ? "You have too many connections open to this server. "
                                "Close some and try again."
                              : "The server has as many connections open as it allows. "
                                "Try again shortly.");
    response.headers.push_back({"Retry-After", std::to_string(kRetryAfterSeconds)});
    return response;
}

Refuser::Refuser() : wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    thread_ = std::thread([this] { run(); });
}

Refuser::~Refuser() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(wake_.get(), &one, sizeof one);
    thread_.join();
}

void Refuser::refuse(Connection connection, int status) noexcept {
    try {
        const Response response = refusal_response(status);
        const std::string reply = serialize_head(response, std::time(nullptr)) + response.body;
        // A fresh socket's send buffer is empty and far larger than the reply, so this does
        // not wait; if the client is already gone the send simply fails.
        const ssize_t sent =
            ::send(connection.fd.get(), reply.data(), reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        ::shutdown(connection.fd.get(), SHUT_WR);
        log_access(connection.peer_ip, "", status, sent > 0 ? response.body.size() : 0);
        {
            std::lock_guard lock(mutex_);
            // Bounded even if the thread falls behind: past the cap the oldest closes at once.
            if (queue_.size() >= kMaxLingering) queue_.pop_front();
            queue_.push_back({std::move(connection.fd), Clock::now() + kRefusalLinger});
        }
    } catch (const std::bad_alloc&) {
        // No memory to build the reply or to queue the socket: the fixed 503 still goes out.
        if (connection.fd.valid()) send_unavailable(std::move(connection));
        return;
    }
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(wake_.get(), &one, sizeof one);
}

void Refuser::run() {
    std::vector<Lingering> active;
    std::vector<pollfd> fds;
    char sink[4096];
    while (true) {
        {
            std::lock_guard lock(mutex_);
            if (stopping_) break;
            for (auto& item : queue_) active.push_back(std::move(item));
            queue_.clear();
            if (active.size() > kMaxLingering) {
                active.erase(active.begin(),
                             active.end() - static_cast<std::ptrdiff_t>(kMaxLingering));
            }
        }
        // Wait for request bytes to drop, a client's close, new work, or the next deadline.
        auto next = Clock::now() + std::chrono::hours(1);
        fds.assign(1, pollfd{wake_.get(), POLLIN, 0});
        for (const auto& item : active) {
            fds.push_back(pollfd{item.fd.get(), POLLIN, 0});
            next = std::min(next, item.deadline);
        }
        const auto wait = std::chrono::ceil<std::chrono::milliseconds>(next - Clock::now()).count();
        const int ready =
            ::poll(fds.data(), fds.size(), static_cast<int>(std::max<long long>(wait, 0)));
        if (ready < 0 && errno != EINTR) continue;
        std::uint64_t drained = 0;
        [[maybe_unused]] const ssize_t n = ::read(wake_.get(), &drained, sizeof drained);

        const auto now = Clock::now();
        std::size_t keep = 0;
        for (std::size_t i = 0; i < active.size(); ++i) {
            bool done = now >= active[i].deadline;
            if (!done && fds[i + 1].revents != 0) {
                const ssize_t got = ::recv(active[i].fd.get(), sink, sizeof sink, 0);
                done = got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR);
            }
            if (!done) active[keep++] = std::move(active[i]);
        }
        active.resize(keep);  // dropped entries close their sockets here
    }
}

}  // namespace lab
