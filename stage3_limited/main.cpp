/// @file stage3_limited/main.cpp
/// @brief Stage 3: stage 2 plus admission control — per-client and total connection limits.
///
/// The lesson: a thread per connection is only safe with a bound. Before a thread starts,
/// the connection must take a slot from the limiter (at most -maxclient per client IP,
/// -maxtotal in all). Over a limit, the accepting thread tells the client so at once — 429
/// or 503 — and no thread is started for it. An admitted connection's slot travels with its
/// thread's task and is given back once that thread has closed the connection and is gone
/// (or at once, with a 503 to the client, if no thread can be started): so the limit bounds
/// threads, however fast clients come and go. The slot counts until then, idle or not; the
/// read and send deadlines (-t) make sure nobody holds one forever. With --reclaim-idle, a
/// full limiter instead takes the slot of the oldest connection still waiting for its request
/// head (that client is told 408), and the newcomer has it once that connection's thread is
/// gone, so idle floods cannot lock out.

#include "lab/net.hpp"
#include "lab/options.hpp"
#include "lab/session.hpp"
#include "lab/threads.hpp"
#include "limiter.hpp"
#include "refusal.hpp"
#include "status.hpp"

namespace {

constexpr lab::StageInfo kStage{
    .name = "stage3_limited",
    .summary = "Threaded HTTP/1.0 static-file server with per-client and total connection limits.",
    .has_limits = true,
};

}  // namespace

int main(int argc, char* argv[]) {
    try {
        const lab::Options options = lab::parse_options(argc, argv, kStage);
        const lab::SignalWatcher signals;  // SIGINT/SIGTERM → shutdown request
        lab::Listener listener(options.bind, options.port);
        // A reclaimed slot passes to the newcomer only once its thread is gone.
        lab::ConnectionLimiter limiter(options.max_per_client, options.max_total,
                                       options.reclaim_idle,
                                       lab::ConnectionLimiter::Handover::when_released);
        lab::Counters counters;
        lab::ServerContext context = lab::make_context(options);
        if (options.status_page) {
            context.status_json = [&] { return lab::status_json(limiter, counters); };
            context.status_html = [&] { return lab::status_html(limiter, counters); };
        }
        lab::announce(kStage.name, listener, options);

        lab::Refuser refuser;
        lab::ThreadSet threads;
        // accept → take a slot (or refuse) → start a thread → accept again.
        while (auto connection = listener.accept()) {
            ++counters.accepted;
            // BEGIN SOLUTION stage3/admission
            auto admission = limiter.try_acquire(connection->peer_ip);
            if (admission.verdict == lab::ConnectionLimiter::Verdict::client_full) {
                ++counters.refused_per_client;
                refuser.refuse(std::move(*connection), 429);
                continue;
            }
            if (admission.verdict == lab::ConnectionLimiter::Verdict::server_full) {
                ++counters.refused_total;
                refuser.refuse(std::move(*connection), 503);
                continue;
            }
            // The slot travels with the thread's task, given back when the thread is gone.
            threads.spawn(
                std::move(*connection),
                [&context, &counters, slot = std::move(admission.slot)](lab::Connection client) {
                    const auto outcome =
                        lab::serve_connection(std::move(client), context, slot.reclaimable());
                    slot.connection_closed();  // its client may connect again at once
                    counters.count(outcome);
                });
            // STUB
            // // TODO(student): admission control. Take a slot from `limiter` for
            // // connection->peer_ip; refuse with 429/503 through `refuser` (no thread), or
            // // move the slot into the task below. Until then nothing is refused.
            // threads.spawn(std::move(*connection), [&context, &counters](lab::Connection client) {
            //     counters.count(lab::serve_connection(std::move(client), context));
            // });
            // END SOLUTION
        }
        // Threads waiting on clients saw the shutdown request too; wait for all to finish.
        threads.join_all();
        return 0;
    } catch (const lab::StartupError& error) {
        return lab::report_startup_error(error);
    }
}
