/// @file stage1_sequential/main.cpp
/// @brief Stage 1: a sequential server. One client at a time: accept → handle → close.
///
/// The lesson: while serve_connection() waits on one client, nobody else is served. A
/// client that connects and says nothing holds up everyone behind it until it gives up
/// or the read deadline (-t) passes.

#include "lab/net.hpp"
#include "lab/options.hpp"
#include "lab/session.hpp"

namespace {

constexpr lab::StageInfo kStage{
    .name = "stage1_sequential",
    .summary = "Sequential HTTP/1.0 static-file server: serves one client at a time.",
};

}  // namespace

int main(int argc, char* argv[]) {
    try {
        const lab::Options options = lab::parse_options(argc, argv, kStage);
        const lab::SignalWatcher signals;  // SIGINT/SIGTERM → shutdown request
        lab::Listener listener(options.bind, options.port);
        const lab::ServerContext context = lab::make_context(options);
        lab::announce(kStage.name, listener, options);

        // accept → handle → close, until SIGINT/SIGTERM makes accept() return nothing.
        while (auto connection = listener.accept()) {
            lab::serve_connection(std::move(*connection), context);
        }
        return 0;
    } catch (const lab::StartupError& error) {
        return lab::report_startup_error(error);
    }
}
