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
void log_access(std::string_view client, std::string_view request_line, int status,
                std::uint64_t bytes);

/// @brief Writes one diagnostic line to stderr, prefixed with the program name.
void log_error(std::string_view message);

/// @brief The text for errno value @p err (a thread-safe strerror).
[[nodiscard]] std::string errno_text(int err);

/// @brief Sets the program name used by log_error().
void set_program_name(std::string_view name);

}  // namespace lab
