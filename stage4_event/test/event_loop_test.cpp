// Tests of stage 4's event loops over real loopback sockets: two loops share one listener, as
// in the server. Each test runs in a child process (a death test), because stopping the loops
// means requesting the program-wide shutdown, which cannot be taken back.
#include "event_loop.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "lab/log.hpp"
#include "test_support.hpp"

namespace {

/// Sequential requests sent to the two loops.
constexpr int kRequests = 200;

// One HTTP/1.0 GET of /a.txt to @p port; the status line of the reply ("" if none came).
std::string fetch_status_line(std::uint16_t port) {
    const lab::Fd sock(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const timeval limit{5, 0};  // a stuck loop fails the test instead of hanging it
    ::setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(sock.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
        return "";
    }
    const std::string request = "GET /a.txt HTTP/1.0\r\n\r\n";
    if (::send(sock.get(), request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size())) {
        return "";
    }
    std::string reply;
    char buf[4096];
    ssize_t n = 0;
    while ((n = ::recv(sock.get(), buf, sizeof buf, 0)) > 0) reply.append(buf, n);
    return reply.substr(0, reply.find("\r\n"));
}

// Serves kRequests sequential clients with two loops; 0 when every reply was a 200 and each
// loop took at least a quarter of the clients. Prints what it saw on stderr.
int serve_sequential_clients() {
    lab::set_access_log(false);
    const lab::SignalWatcher signals;  // sets up the shutdown descriptor the loops watch
    const lab::test::TempDir dir("event-loop-test");
    dir.write("a.txt", "hello");
    lab::Listener listener("127.0.0.1", 0);
    listener.set_nonblocking();
    lab::ConnectionLimiter limiter(kRequests, kRequests);
    lab::Counters counters;
    lab::ServerContext context;
    context.site.root = lab::DocumentRoot(dir.path());
    const lab::Shared shared{listener, limiter, context, counters};
    lab::EventLoop first(shared);
    lab::EventLoop second(shared);
    int ok = 0;
    {
        const std::jthread first_thread([&] { first.run(); });
        const std::jthread second_thread([&] { second.run(); });
        for (int i = 0; i < kRequests; ++i) {
            if (fetch_status_line(listener.port()) == "HTTP/1.0 200 OK") ++ok;
        }
        lab::request_shutdown();
    }
    std::fprintf(stderr, "%d of %d replies were 200; the loops accepted %llu and %llu\n", ok,
                 kRequests, static_cast<unsigned long long>(first.accepted()),
                 static_cast<unsigned long long>(second.accepted()));
    const std::uint64_t fewer = std::min(first.accepted(), second.accepted());
    return ok == kRequests && first.accepted() + second.accepted() == kRequests &&
                   fewer >= kRequests / 4
               ? 0
               : 1;
}

// With one client at a time, the first loop is always back in epoll_wait() when the next
// client arrives, and EPOLLEXCLUSIVE would hand it every client; re-registering every
// kRotateEvery clients makes the loops take turns.
TEST(EventLoopDeathTest, LoopsTakeTurnsWithTheClients) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(std::exit(serve_sequential_clients()), testing::ExitedWithCode(0), "");
}

}  // namespace
