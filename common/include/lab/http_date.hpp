/// @file http_date.hpp
/// @brief HTTP date formatting and parsing (RFC 1123, RFC 850, asctime).
#pragma once

#include <ctime>
#include <optional>
#include <string>
#include <string_view>

namespace lab {

/// @brief Formats @p t as an RFC 1123 date in GMT, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
[[nodiscard]] std::string format_http_date(std::time_t t);

/// @brief Parses any of the three date forms HTTP/1.0 allows; nullopt if it is none of them.
[[nodiscard]] std::optional<std::time_t> parse_http_date(std::string_view text);

/// @brief Formats @p t for the Common Log Format, e.g. `10/Oct/2000:13:55:36 +0000`.
[[nodiscard]] std::string format_log_date(std::time_t t);

}  // namespace lab
