/// @file stage3_limited/main.cpp
/// @brief Stage 3: stage 2 plus admission control — per-client and total connection limits.
///
/// The lesson: a thread per connection is only safe with a bound. Before a thread starts,
/// the connection must take a slot from the limiter (at most -maxclient per client IP,
/// -maxtotal in all). Over the limit, the client is told so at once — 429 or 503 — and no
/// thread is started. The slot is held until the connection closes, idle or not, and the
/// read and send deadlines (-t) make sure nobody holds one forever. With at most -maxtotal
/// connections admitted, -maxtotal + 1 threads are enough: they are started as load needs
/// them and then kept, each accepting and serving by itself, instead of one new thread
/// per connection.

#include <atomic>
#include <cstdint>
#include <string>

#include "lab/log.hpp"
#include "lab/net.hpp"
#include "lab/options.hpp"
#include "lab/session.hpp"
#include "limiter.hpp"
#include "refusal.hpp"
#include "serving_threads.hpp"

namespace {

constexpr lab::StageInfo kStage{
    .name = "stage3_limited",
    .summary = "Threaded HTTP/1.0 static-file server with per-client and total connection limits.",
    .has_limits = true,
};

// What happened to connections so far, for /server-status.
struct Counters {
    std::atomic<std::uint64_t> accepted{0};
    std::atomic<std::uint64_t> served{0};
    std::atomic<std::uint64_t> refused_per_client{0};
    std::atomic<std::uint64_t> refused_total{0};
    std::atomic<std::uint64_t> timed_out{0};
};

// The live view of the limits: what is held now, and the counters.
std::string status_json(const lab::ConnectionLimiter& limiter, const Counters& counters) {
    const auto snap = limiter.snapshot();
    std::string json = "{\"active\": " + std::to_string(snap.total) + ", \"per_client\": {";
    const char* sep = "";
    for (const auto& [client, count] : snap.per_client) {
        json += sep;
        json += "\"" + client + "\": " + std::to_string(count);
        sep = ", ";
    }
    json += "}, \"accepted\": " + std::to_string(counters.accepted.load()) +
            ", \"served\": " + std::to_string(counters.served.load()) +
            ", \"refused_per_client\": " + std::to_string(counters.refused_per_client.load()) +
            ", \"refused_total\": " + std::to_string(counters.refused_total.load()) +
            ", \"timed_out\": " + std::to_string(counters.timed_out.load()) +
            ", \"max_per_client\": " + std::to_string(limiter.max_per_client()) +
            ", \"max_total\": " + std::to_string(limiter.max_total()) + "}\n";
    return json;
}

}  // namespace

int main(int argc, char* argv[]) {
    try {
        const lab::Options options = lab::parse_options(argc, argv, kStage);
        const lab::SignalWatcher signals;  // SIGINT/SIGTERM → shutdown request
        lab::Listener listener(options.bind, options.port);
        lab::ConnectionLimiter limiter(options.max_per_client, options.max_total);
        Counters counters;
        lab::ServerContext context = lab::make_context(options);
        if (options.status_page) {
            context.status_json = [&limiter, &counters] { return status_json(limiter, counters); };
        }
        lab::announce(kStage.name, listener, options);

        lab::Refuser refuser;
        // accept → take a slot (or refuse) → serve, on up to max_total + 1 threads that each
        // run this loop: one more than can hold slots, so a thread is always free to accept
        // the next client, if only to refuse it.
        lab::ServingThreads threads(
            listener, static_cast<std::size_t>(options.max_total) + 1,
            [&](lab::Connection connection, lab::ServingThreads::Turn& turn) {
                ++counters.accepted;
                auto admission = limiter.try_acquire(connection.peer_ip);
                turn.unlock();  // admitted in accept order; the next thread may accept now
                if (admission.verdict == lab::ConnectionLimiter::Verdict::client_full) {
                    ++counters.refused_per_client;
                    refuser.refuse(std::move(connection), 429);
                    return;
                }
                if (admission.verdict == lab::ConnectionLimiter::Verdict::server_full) {
                    ++counters.refused_total;
                    refuser.refuse(std::move(connection), 503);
                    return;
                }
                const auto outcome = lab::serve_connection(std::move(connection), context);
                if (outcome == lab::SessionOutcome::served) ++counters.served;
                if (outcome == lab::SessionOutcome::timed_out) ++counters.timed_out;
                // admission.slot is given back here, after the connection has closed.
            });
        threads.run();
        return 0;
    } catch (const lab::StartupError& error) {
        return lab::report_startup_error(error);
    }
}
