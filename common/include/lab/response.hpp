/// @file response.hpp
/// @brief The response model and its wire form.
#pragma once

#include <cstdint>
#include <ctime>
#include <string>
#include <string_view>
#include <vector>

#include "lab/fd.hpp"
#include "lab/request.hpp"

namespace lab {

/// @brief Product name sent in the `Server` header.
inline constexpr std::string_view kServerName = "lab-httpd/1.0";

/// @brief A response ready to send: status, extra headers and a body in memory or in a file.
///
/// The serializer adds `Date`, `Server`, `Content-Length` and `Connection: close` itself, so
/// `headers` holds only what is particular to this response.
struct Response {
    int status = 200;             ///< HTTP status code.
    std::vector<Header> headers;  ///< Extra headers (Content-Type, Last-Modified, Location...).
    std::string body;             ///< Body held in memory (error pages, redirects, JSON).
    Fd file;                      ///< When valid, the body is this file instead of `body`.
    std::uint64_t file_size = 0;  ///< Size of `file` in bytes.
    bool send_body = true;        ///< False for HEAD: headers describe a body that is not sent.
    bool simple = false;          ///< HTTP/0.9 reply: the body alone, no status line or headers.

    /// @brief Length of the body the headers describe.
    [[nodiscard]] std::uint64_t content_length() const noexcept {
        return file.valid() ? file_size : body.size();
    }
    /// @brief Bytes of body that actually go on the wire.
    [[nodiscard]] std::uint64_t body_bytes_sent() const noexcept {
        return send_body && status != 304 ? content_length() : 0;
    }
};

/// @brief Standard reason phrase for @p status ("Not Found"), or "Unknown".
[[nodiscard]] std::string_view reason_phrase(int status) noexcept;

/// @brief A response whose short HTML body explains @p detail.
[[nodiscard]] Response error_response(int status, std::string_view detail);

/// @brief The status line and headers (ending in the blank line); empty for an HTTP/0.9 reply.
[[nodiscard]] std::string serialize_head(const Response& response, std::time_t now);

/// @brief Escapes @p text for inclusion in HTML.
[[nodiscard]] std::string html_escape(std::string_view text);

}  // namespace lab
