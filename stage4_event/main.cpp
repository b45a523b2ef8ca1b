/// @file stage4_event/main.cpp
/// @brief Stage 4: stage 3's limits, served by a few event loops instead of a thread each.
///
/// The lesson: a thread per connection spends a thread — a stack, a scheduler entry — on a
/// client that is mostly waiting. Here no thread ever waits on one client. Each core runs an
/// event loop (event_loop.cpp) that asks epoll which of its sockets are ready and moves each
/// connection one step further (connection.cpp: reading the head → sending the reply →
/// lingering close) without ever blocking; deadlines sit in a timer heap (timers.cpp). The
/// limits, replies and log are stage 3's: the same limiter, shared by every loop under one
/// lock, decides on each accepted client, and a refused one is told 429 or 503 at once.

#include <memory>
#include <system_error>
#include <thread>
#include <vector>

#include "event_loop.hpp"
#include "lab/log.hpp"
#include "lab/net.hpp"
#include "lab/options.hpp"
#include "lab/session.hpp"
#include "limiter.hpp"
#include "status.hpp"

namespace {

constexpr lab::StageInfo kStage{
    .name = "stage4_event",
    .summary = "Event-driven HTTP/1.0 static-file server with per-client and total limits.",
    .has_limits = true,
};

}  // namespace

int main(int argc, char* argv[]) {
    try {
        const lab::Options options = lab::parse_options(argc, argv, kStage);
        const lab::SignalWatcher signals;  // SIGINT/SIGTERM → shutdown request
        lab::Listener listener(options.bind, options.port);
        listener.set_nonblocking();     // loops must never wait in accept()
        lab::raise_descriptor_limit();  // one descriptor per connection, thousands of them
        lab::ConnectionLimiter limiter(options.max_per_client, options.max_total,
                                       options.reclaim_idle);
        lab::Counters counters;
        lab::ServerContext context = lab::make_context(options);
        if (options.status_page) {
            context.status_json = [&] { return lab::status_json(limiter, counters); };
            context.status_html = [&] { return lab::status_html(limiter, counters); };
        }

        // One event loop per core, all watching the same listener; the main thread runs
        // the first. Each returns once shutdown was requested and its connections are done.
        const lab::Shared shared{listener, limiter, context, counters};
        std::vector<std::unique_ptr<lab::EventLoop>> loops;
        for (unsigned i = 0; i < std::max(1U, std::thread::hardware_concurrency()); ++i) {
            loops.push_back(std::make_unique<lab::EventLoop>(shared));
        }
        std::vector<std::jthread> threads;
        for (std::size_t i = 1; i < loops.size(); ++i) {
            threads.emplace_back([&loop = *loops[i]] { loop.run(); });
        }
        lab::announce(kStage.name, listener, options);  // ready: every loop is running
        loops.front()->run();
        return 0;  // the jthreads join the other loops here
    } catch (const lab::StartupError& error) {
        return lab::report_startup_error(error);
    } catch (const std::system_error& error) {
        return lab::report_startup_error(
            lab::StartupError(1, std::string("cannot start a thread: ") + error.what()));
    }
}
