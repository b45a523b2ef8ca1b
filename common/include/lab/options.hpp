/// @file options.hpp
/// @brief Command-line options shared by every stage.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace lab {

/// @brief Identity of a stage binary and which optional options it accepts.
struct StageInfo {
    std::string_view name;     ///< Executable name, e.g. "stage1_sequential".
    std::string_view summary;  ///< One line for --help.
    bool has_limits = false;   ///< Accepts -maxclient, -maxtotal and --status.
};

/// @brief Default request read deadline, in seconds.
inline constexpr int kDefaultTimeoutSeconds = 10;
/// @brief Default most connections per client IP (stage 3).
inline constexpr int kDefaultMaxPerClient = 12;
/// @brief Default most connections in all (stage 3).
inline constexpr int kDefaultMaxTotal = 60;

/// @brief Everything the command line can set.
struct Options {
    std::uint16_t port = 8080;       ///< Port to listen on; 0 picks a free one.
    std::string bind = "127.0.0.1";  ///< Address to listen on.
    std::filesystem::path root;      ///< Canonical document root.
    std::chrono::seconds timeout{kDefaultTimeoutSeconds};  ///< Read and send deadline.
    bool quiet = false;                                    ///< No access log.
    int max_per_client = kDefaultMaxPerClient;             ///< Stage 3: connections per client IP.
    int max_total = kDefaultMaxTotal;                      ///< Stage 3: connections in all.
    bool status_page = false;                              ///< Stage 3: serve /server-status.
    bool reclaim_idle = false;   ///< Stage 3: a full server reclaims head-incomplete connections.
    bool status_remote = false;  ///< Stage 3: answer /server-status to non-loopback clients too.
    std::vector<std::string> allow_agents;  ///< `--allow-agent` patterns.
    std::vector<std::string> deny_agents;   ///< `--deny-agent` patterns.
};

/// @brief A startup failure: main prints `what()` (if not empty) and exits with `exit_code`.
class StartupError : public std::runtime_error {
  public:
    /// @brief Makes an error that ends the program with @p code.
    StartupError(int code, const std::string& message)
        : std::runtime_error(message), exit_code(code) {}
    int exit_code;  ///< 0 after --help/--version, 1 for runtime failures, 2 for usage errors.
};

/// @brief Parses @p argv for @p stage; throws StartupError on bad input, --help or --version.
///
/// Single-dash long options (`-maxclient 12`) work, as the course's launch commands use them.
[[nodiscard]] Options parse_options(int argc, char* argv[], const StageInfo& stage);

/// @brief Prints a StartupError the way every stage does and returns its exit code.
int report_startup_error(const StartupError& error);

}  // namespace lab
