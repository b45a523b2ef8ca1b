/// @file log.hpp
/// @brief Access log (Common Log Format) and diagnostics.
#pragma once

#include <cstdint>
#include <ctime>
#include <string>
#include <string_view>

namespace lab {

/// @brief Escapes control bytes, non-ASCII bytes, `"` and `\` so text stays on one log line.
[[nodiscard]] std::string escape_log_text(std::string_view text);

/// @brief One Common Log Format line (with trailing newline) for a finished request.
///
/// @p request_line is escaped, so a client cannot forge extra lines; an empty one prints `-`.
[[nodiscard]] std::string format_access_line(std::string_view client, std::time_t when,
                                             std::string_view request_line, int status,
                                             std::uint64_t bytes);

/// @brief Turns the access log on or off (the `-q` option turns it off).
void set_access_log(bool enabled) noexcept;

/// @brief Writes one access line to stdout with a single write, so threads never interleave.
///
/// Never throws: when memory has run out the line is lost, not the caller's work.
void log_access(std::string_view client, std::string_view request_line, int status,
                std::uint64_t bytes) noexcept;

/// @brief Writes one diagnostic line to stderr, prefixed with the program name.
///
/// Never throws: when memory has run out the line is lost, not the caller's work.
void log_error(std::string_view message) noexcept;

/// @brief Logs that the connection of @p client ended on a failure, and @p why. Never throws.
void log_dropped(std::string_view client, std::string_view why) noexcept;

/// @brief The text for errno value @p err (a thread-safe strerror).
[[nodiscard]] std::string errno_text(int err);

/// @brief Sets the program name used by log_error().
void set_program_name(std::string_view name);

}  // namespace lab
