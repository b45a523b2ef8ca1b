#include "lab/options.hpp"

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <string>
#include <vector>

#include <getopt.h>
#include <unistd.h>

#include "lab/log.hpp"

namespace lab {

namespace {

// Values above 255 so they never clash with a short option letter.
enum LongOnly : int {
    kMaxClient = 256,
    kMaxTotal,
    kStatus,
    kVersion,
    kAllowAgent,
    kDenyAgent,
    kStatusRemote,
    kReclaimIdle
};

[[noreturn]] void usage_error(const StageInfo& stage, const std::string& message) {
    throw StartupError(2, message + " (try " + std::string(stage.name) + " --help)");
}

// Parses a whole decimal integer in [lo, hi]; anything else is a usage error.
long parse_number(const StageInfo& stage, const char* option, const char* text, long lo, long hi) {
    long value = 0;
    const std::string_view s(text);
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (s.empty() || ec != std::errc{} || end != s.data() + s.size() || value < lo || value > hi) {
        usage_error(stage, std::string("invalid value '") + text + "' for " + option +
                               " (expected a whole number from " + std::to_string(lo) + " to " +
                               std::to_string(hi) + ")");
    }
    return value;
}

std::filesystem::path parse_root(const StageInfo& stage, const char* text) {
    std::error_code ec;
    auto root = std::filesystem::canonical(text, ec);
    if (ec || !std::filesystem::is_directory(root, ec) ||
        ::access(root.c_str(), R_OK | X_OK) != 0) {
        usage_error(stage, std::string("document root '") + text + "' is not a readable directory");
    }
    return root;
}

std::string help_text(const StageInfo& stage) {
    std::string text =
        std::string("Usage: ") + std::string(stage.name) + " [options]\n" +
        std::string(stage.summary) +
        "\n\n"
        "  -p, --port PORT        port to listen on (default 8080; 0 picks a free one)\n"
        "  -r, --root DIR         document root (default: the current directory)\n"
        "  -b, --bind ADDR        address to listen on (default 127.0.0.1)\n"
        "  -t, --timeout SECONDS  deadline to receive a request, and most time a\n"
        "                         client may stall a reply (default 10)\n"
        "  -q, --quiet            no access log on stdout\n"
        "      --allow-agent TEXT serve only clients whose User-Agent contains TEXT\n"
        "                         (case-insensitive; repeatable)\n"
        "      --deny-agent TEXT  refuse clients whose User-Agent contains TEXT (wins over "
        "allow)\n";
    if (stage.has_limits) {
        text +=
            "  -maxclient, --max-per-client N  most open connections per client IP (default 12)\n"
            "  -maxtotal, --max-total N        most open connections in all (default 60)\n"
            "  --status               serve live counters as JSON at /server-status\n"
            "                         (to clients on a loopback address only)\n"
            "  --status-remote        answer /server-status to any client address\n"
            "  --reclaim-idle         when full, take the slot of the oldest connection that\n"
            "                         has not sent a whole request yet (it gets 408)\n";
    }
    text +=
        "  -h, --help             show this help and exit\n"
        "      --version          show the version and exit\n"
        "\nSingle-dash long options (-port 8080, -maxclient 12) work too.\n";
    return text;
}

}  // namespace

Options parse_options(int argc, char* argv[], const StageInfo& stage) {
    std::vector<option> longopts = {
        {"port", required_argument, nullptr, 'p'},
        {"root", required_argument, nullptr, 'r'},
        {"bind", required_argument, nullptr, 'b'},
        {"timeout", required_argument, nullptr, 't'},
        {"quiet", no_argument, nullptr, 'q'},
        {"help", no_argument, nullptr, 'h'},
        {"version", no_argument, nullptr, kVersion},
        {"allow-agent", required_argument, nullptr, kAllowAgent},
        {"deny-agent", required_argument, nullptr, kDenyAgent},
    };
    if (stage.has_limits) {
        longopts.push_back({"maxclient", required_argument, nullptr, kMaxClient});
        longopts.push_back({"max-per-client", required_argument, nullptr, kMaxClient});
        longopts.push_back({"maxtotal", required_argument, nullptr, kMaxTotal});
        longopts.push_back({"max-total", required_argument, nullptr, kMaxTotal});
        longopts.push_back({"status", no_argument, nullptr, kStatus});
        longopts.push_back({"status-remote", no_argument, nullptr, kStatusRemote});
        longopts.push_back({"reclaim-idle", no_argument, nullptr, kReclaimIdle});
    }
    longopts.push_back({nullptr, 0, nullptr, 0});

    set_program_name(stage.name);
    Options options;
    bool root_given = false;
    optind = 0;  // getopt keeps global state; 0 makes it start afresh
    opterr = 0;  // we print our own one-line messages
    int opt = 0;
    // The leading ':' makes a missing argument come back as ':' instead of '?'.
    // Options are parsed once, at startup, before any thread exists.
    while ((opt = getopt_long_only(  // NOLINT(concurrency-mt-unsafe)
                argc, argv, ":p:r:b:t:qh", longopts.data(), nullptr)) != -1) {
        switch (opt) {
            case 'p':
                options.port =
                    static_cast<std::uint16_t>(parse_number(stage, "--port", optarg, 0, 65535));
                break;
            case 'r':
                options.root = parse_root(stage, optarg);
                root_given = true;
                break;
            case 'b':
                options.bind = optarg;
                break;
            case 't':
                options.timeout =
                    std::chrono::seconds(parse_number(stage, "--timeout", optarg, 1, 3600));
                break;
            case 'q':
                options.quiet = true;
                break;
            case 'h':
                throw StartupError(0, help_text(stage));
            case kVersion:
                throw StartupError(0, std::string(stage.name) + " (lab kit) 1.0\n");
            case kMaxClient:
                options.max_per_client =
                    static_cast<int>(parse_number(stage, "-maxclient", optarg, 1, 100000));
                break;
            case kMaxTotal:
                options.max_total =
                    static_cast<int>(parse_number(stage, "-maxtotal", optarg, 1, 100000));
                break;
            case kStatus:
                options.status_page = true;
                break;
            case kStatusRemote:
                options.status_remote = true;
                break;
            case kReclaimIdle:
                options.reclaim_idle = true;
                break;
            case kAllowAgent:
            case kDenyAgent:
                if (*optarg == '\0') usage_error(stage, "an agent pattern must not be empty");
                (opt == kAllowAgent ? options.allow_agents : options.deny_agents)
                    .emplace_back(optarg);
                break;
            case ':':
                usage_error(stage, std::string("option '") + argv[optind - 1] + "' needs a value");
            default:
                usage_error(stage, std::string("unknown option '") +
                                       argv[optind > 0 ? optind - 1 : 0] + "'");
        }
    }
    if (optind < argc)
        usage_error(stage, std::string("unexpected argument '") + argv[optind] + "'");
    if (!root_given) options.root = parse_root(stage, ".");
    return options;
}

int report_startup_error(const StartupError& error) {
    if (error.exit_code != 0) {
        log_error(error.what());  // one line, prefixed with the program name
        return error.exit_code;
    }
    (void)std::fputs(error.what(), stdout);  // --help or --version
    (void)std::fflush(stdout);
    return 0;
}

}  // namespace lab
