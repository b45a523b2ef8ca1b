/// @file stage2_threaded/main.cpp
/// @brief Stage 2: a thread per connection. The accept loop never waits on a client.
///
/// The lesson: each accepted connection is handed to a new thread and the main thread goes
/// straight back to accept(), so a silent client delays nobody. The cost: nothing bounds the
/// number of threads — a thousand idle connections are a thousand threads (stage 3 fixes it).

#include "lab/net.hpp"
#include "lab/options.hpp"
#include "lab/session.hpp"
#include "lab/threads.hpp"

namespace {

constexpr lab::StageInfo kStage{
    .name = "stage2_threaded",
    .summary = "Threaded HTTP/1.0 static-file server: one thread per connection, no limit.",
};

}  // namespace

int main(int argc, char* argv[]) {
    try {
        const lab::Options options = lab::parse_options(argc, argv, kStage);
        const lab::SignalWatcher signals;  // SIGINT/SIGTERM → shutdown request
        lab::Listener listener(options.bind, options.port);
        const lab::ServerContext context = lab::make_context(options);
        lab::announce(kStage.name, listener, options);

        lab::ThreadSet threads;
        // accept → start a thread → accept again, until SIGINT/SIGTERM.
        while (auto connection = listener.accept()) {
            // If no thread can be started, spawn() tells the client 503 and closes.
            threads.spawn(std::move(*connection), [&context](lab::Connection client) {
                lab::serve_connection(std::move(client), context);
            });
        }
        // Threads waiting on clients saw the shutdown request too; wait for all to finish.
        threads.join_all();
        return 0;
    } catch (const lab::StartupError& error) {
        return lab::report_startup_error(error);
    }
}
