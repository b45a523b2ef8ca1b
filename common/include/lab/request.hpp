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
///
/// Filled in stages: the request line fields (`method`, `target`, `request_line`, versions)
/// as soon as the request line is accepted, then one header at a time. See ParseResult for
/// what each parse state leaves in it.
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

/// @brief Result of parse_request() and RequestParser::parse().
///
/// What `request` holds depends on `state` and on how far parsing got:
/// - done: the whole request head.
/// - incomplete: empty until the request line has arrived and been accepted; after that its
///   request line fields are set (so `request.method` is already known) and `headers` holds
///   the fields accepted so far.
/// - failed in the request line (or before it): empty.
/// - failed after the request line was accepted (bad header line, too many headers, header
///   block too large): the request line fields and the headers accepted before the failure,
///   so a caller can still see, for example, that the method was HEAD and send no body.
struct ParseResult {
    ParseState state = ParseState::incomplete;  ///< Outcome.
    Request request;                            ///< What was parsed; see above.
    int status = 0;            ///< HTTP status to answer with, when state is failed (400/414/431).
    std::string reason;        ///< Human-readable cause, when state is failed.
    std::size_t consumed = 0;  ///< Bytes of @p bytes that formed the head, when done.
};

/// @brief Parses a request head as it arrives, looking at each byte once.
///
/// Like picohttpparser's `last_len`, it remembers where the next unparsed line starts and how
/// far it has already searched for that line's LF, so each call scans only the new bytes and
/// parses each complete line exactly once: the total cost is linear in the bytes received,
/// however they are split. Limits are checked on partial input too, so an endless line or
/// header block fails as soon as it passes its limit; a malformed line fails as soon as its
/// LF arrives. Accepts CRLF and bare LF line endings. One parser reads one request head.
class RequestParser {
  public:
    /// @brief Continues parsing; @p bytes is everything received so far (each call's bytes
    /// must start with the previous call's bytes). Returns the result so far.
    ///
    /// While the result is incomplete it equals parse_request(@p bytes); once it is done or
    /// failed, further calls return that same result without looking at @p bytes.
    const ParseResult& parse(std::string_view bytes);
    /// @brief The client will send nothing more (it half-closed): a head still incomplete
    /// fails with 400 if any byte of it arrived. Returns the result.
    const ParseResult& end_of_input(std::string_view bytes);
    /// @brief The result of the last parse() call.
    [[nodiscard]] const ParseResult& result() const noexcept { return result_; }
    /// @brief Bytes examined so far: each byte searched for a line ending, plus each byte of
    /// each complete line handed to the line parsers. At most twice the bytes received.
    [[nodiscard]] std::size_t scanned() const noexcept { return scanned_; }

  private:
    /// @brief Which part of the head the next line belongs to.
    enum class Phase { blank_lines, request_line, headers };

    /// @brief Skips the empty lines allowed before the request line; false while undecided.
    bool skip_blank_lines(std::string_view bytes);
    /// @brief Parses the request line once its LF has arrived.
    void parse_first_line(std::string_view bytes);
    /// @brief Parses header lines until the blank line, a failure or the end of @p bytes.
    void parse_header_lines(std::string_view bytes);
    /// @brief Checks the header line still arriving, and the block so far, against limits.
    void check_unfinished_header(std::string_view bytes);
    /// @brief Where the LF ending the line at `line_start_` is, searching only new bytes.
    std::size_t find_line_end(std::string_view bytes);
    /// @brief Marks the result failed, keeping what `request` holds.
    void fail(int status, const char* reason);
    /// @brief Marks the result done, the head ending just before @p consumed.
    void finish(std::size_t consumed);

    ParseResult result_;                ///< The result so far.
    Phase phase_ = Phase::blank_lines;  ///< What the line at `line_start_` is.
    std::size_t line_start_ = 0;        ///< Where the next unparsed line starts.
    std::size_t searched_ = 0;          ///< The bytes before this hold no LF of that line.
    int blank_lines_ = 0;               ///< Empty lines skipped before the request line.
    std::size_t headers_start_ = 0;     ///< Where the header block starts.
    std::size_t scanned_ = 0;           ///< See scanned().
};

/// @brief Parses the request head at the start of @p bytes.
///
/// A one-shot RequestParser: the same result as feeding @p bytes to a fresh parser in one
/// call. Accepts CRLF and bare LF line endings. To parse a head as it arrives, keep a
/// RequestParser instead of calling this again on the growing buffer, which would re-scan it.
[[nodiscard]] ParseResult parse_request(std::string_view bytes);

/// @brief True when @p c may appear in a method or header name (RFC 9110 `tchar`).
[[nodiscard]] bool is_token_char(unsigned char c) noexcept;

/// @brief Compares two ASCII strings ignoring case.
[[nodiscard]] bool iequals(std::string_view a, std::string_view b) noexcept;

}  // namespace lab
