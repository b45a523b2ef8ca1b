/// @file request.hpp
/// @brief HTTP/1.0 request parsing over plain bytes (no sockets involved).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace lab {

/// @brief Longest request line accepted, without its line ending; longer gets 414.
inline constexpr std::size_t kMaxRequestLine = std::size_t{8} * 1024;
/// @brief Longest single header line accepted; longer gets 431.
inline constexpr std::size_t kMaxHeaderLine = std::size_t{8} * 1024;
/// @brief Most header fields accepted in one request; more gets 431.
inline constexpr std::size_t kMaxHeaderCount = 100;
/// @brief Most bytes of header block (after the request line) accepted; more gets 431.
inline constexpr std::size_t kMaxHeaderBytes = std::size_t{64} * 1024;
/// @brief Most bytes a request head can take, line endings included.
inline constexpr std::size_t kMaxRequestHead = kMaxRequestLine + 2 + kMaxHeaderBytes + 2;

/// @brief One header field; the name is stored lower-case, the value trimmed of spaces and tabs.
struct Header {
    std::string name;   ///< Field name, lower-cased.
    std::string value;  ///< Field value without leading or trailing whitespace.
};

/// @brief A parsed request head.
struct Request {
    std::string method;        ///< Method token exactly as sent (methods are case-sensitive).
    std::string target;        ///< Origin-form target (`/path?query`), absolute form reduced to it.
    std::string request_line;  ///< The request line as received, for the access log.
    int version_major = 0;     ///< 0 for an HTTP/0.9 Simple-Request, else 1.
    int version_minor = 9;     ///< Minor version digit.
    std::vector<Header> headers;  ///< Header fields in arrival order.

    /// @brief True for an HTTP/0.9 Simple-Request (`GET /path` with no version).
    [[nodiscard]] bool simple() const noexcept { return version_major == 0; }
    /// @brief Value of the first header called @p name (case-insensitive), or nullptr.
    [[nodiscard]] const std::string* header(std::string_view name) const;
};

/// @brief How far parsing got.
enum class ParseState {
    incomplete,  ///< More bytes are needed; nothing is wrong yet.
    done,        ///< A whole, valid request head was parsed.
    failed,      ///< The bytes can never form a valid request; answer with `status`.
};

/// @brief Result of parse_request().
struct ParseResult {
    ParseState state = ParseState::incomplete;  ///< Outcome.
    Request request;                            ///< The request, when state is done.
    int status = 0;            ///< HTTP status to answer with, when state is failed (400/414/431).
    std::string reason;        ///< Human-readable cause, when state is failed.
    std::size_t consumed = 0;  ///< Bytes of @p bytes that formed the head, when done.
};

/// @brief Parses the request head at the start of @p bytes.
///
/// Call it again with more bytes while it answers incomplete: limits are checked on partial
/// input too, so an endless line or header block fails as soon as it passes its limit.
/// Accepts CRLF and bare LF line endings.
[[nodiscard]] ParseResult parse_request(std::string_view bytes);

/// @brief True when @p c may appear in a method or header name (RFC 9110 `tchar`).
[[nodiscard]] bool is_token_char(unsigned char c) noexcept;

/// @brief Compares two ASCII strings ignoring case.
[[nodiscard]] bool iequals(std::string_view a, std::string_view b) noexcept;

}  // namespace lab
