#include "lab/request.hpp"

#include <algorithm>
#include <optional>

namespace lab {

namespace {

// One line of the head: its text without the line ending, and where the next line starts.
struct Line {
    std::string_view text;
    std::size_t next = 0;
};

// Finds the line starting at `pos`; nullopt while its LF has not arrived.
std::optional<Line> next_line(std::string_view bytes, std::size_t pos) {
    const std::size_t lf = bytes.find('\n', pos);
    if (lf == std::string_view::npos) return std::nullopt;
    std::size_t end = lf;
    if (end > pos && bytes[end - 1] == '\r') --end;
    return Line{bytes.substr(pos, end - pos), lf + 1};
}

// Length of the line still arriving at `pos`, not counting a CR that may start its CRLF.
std::size_t unfinished_length(std::string_view bytes, std::size_t pos) {
    std::size_t length = bytes.size() - pos;
    if (length > 0 && bytes.back() == '\r') --length;
    return length;
}

ParseResult fail(int status, std::string reason) {
    ParseResult result;
    result.state = ParseState::failed;
    result.status = status;
    result.reason = std::move(reason);
    return result;
}

// Control bytes (including a stray CR and NUL) are never valid inside a line; tab is allowed
// only where the caller says so.
bool has_control(std::string_view text, bool allow_tab) {
    return std::any_of(text.begin(), text.end(), [allow_tab](char ch) {
        const auto c = static_cast<unsigned char>(ch);
        return (c < 0x20 && !(allow_tab && c == '\t')) || c == 0x7f;
    });
}

bool is_token(std::string_view text) {
    return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
        return is_token_char(static_cast<unsigned char>(c));
    });
}

std::string lower(std::string_view text) {
    std::string out(text);
    std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) {
        return static_cast<char>(c | (c >= 'A' && c <= 'Z' ? 0x20 : 0));
    });
    return out;
}

// Parses `HTTP/d.d`; only major version 1 exists for this server.
bool parse_version(std::string_view text, Request& request) {
    if (text.size() != 8 || text.substr(0, 5) != "HTTP/" || text[6] != '.') return false;
    const char major = text[5];
    const char minor = text[7];
    if (major != '1' || minor < '0' || minor > '9') return false;
    request.version_major = 1;
    request.version_minor = minor - '0';
    return true;
}

// Reduces an absolute-form target (`http://host/path`) to its path; keeps origin form as is.
std::optional<std::string> origin_form(std::string_view target) {
    if (!target.empty() && target.front() == '/') return std::string(target);
    for (const std::string_view scheme : {"http://", "https://"}) {
        if (target.size() >= scheme.size() && iequals(target.substr(0, scheme.size()), scheme)) {
            const std::string_view rest = target.substr(scheme.size());
            const std::size_t slash = rest.find('/');
            const std::string_view authority = rest.substr(0, slash);
            if (authority.empty()) return std::nullopt;
            if (slash == std::string_view::npos) return std::string("/");
            return std::string(rest.substr(slash));
        }
    }
    return std::nullopt;
}

// Splits and checks `Method SP Target [SP Version]`; returns a failed result on error.
std::optional<ParseResult> parse_request_line(std::string_view line, Request& request) {
    if (line.size() > kMaxRequestLine) return fail(414, "The request line is too long.");
    if (has_control(line, false)) return fail(400, "The request line contains control bytes.");
    request.request_line = std::string(line);
    const std::size_t sp1 = line.find(' ');
    if (sp1 == std::string_view::npos) return fail(400, "The request line has no target.");
    const std::string_view method = line.substr(0, sp1);
    const std::string_view rest = line.substr(sp1 + 1);
    const std::size_t sp2 = rest.find(' ');
    const std::string_view target = rest.substr(0, sp2);
    if (!is_token(method)) return fail(400, "The method is not a valid token.");
    if (target.empty()) return fail(400, "The request target is empty.");
    if (sp2 == std::string_view::npos) {
        // RFC 1945 Simple-Request: `GET target` with no version, answered with the body only.
        if (method != "GET") return fail(400, "An HTTP/0.9 request must use GET.");
        request.version_major = 0;
        request.version_minor = 9;
    } else if (!parse_version(rest.substr(sp2 + 1), request)) {
        return fail(400, "The HTTP version is not supported or malformed.");
    }
    auto path = origin_form(target);
    if (!path) return fail(400, "The request target must start with '/'.");
    request.method = std::string(method);
    request.target = std::move(*path);
    return std::nullopt;
}

// Parses one `Name: value` line into `request`; returns a failed result on error.
std::optional<ParseResult> parse_header_line(std::string_view line, Request& request) {
    if (line.size() > kMaxHeaderLine) return fail(431, "A header line is too long.");
    if (line.front() == ' ' || line.front() == '\t') {
        // Obsolete line folding: rejected, as RFC 9112 allows, rather than guessed at.
        return fail(400, "Folded header lines are not accepted.");
    }
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) return fail(400, "A header line has no colon.");
    const std::string_view name = line.substr(0, colon);
    if (!is_token(name)) return fail(400, "A header name is empty or not a valid token.");
    std::string_view value = line.substr(colon + 1);
    if (has_control(value, true)) return fail(400, "A header value contains control bytes.");
    const auto first = value.find_first_not_of(" \t");
    value = first == std::string_view::npos ? std::string_view{} : value.substr(first);
    value = value.substr(0, value.find_last_not_of(" \t") + 1);
    if (request.headers.size() == kMaxHeaderCount) return fail(431, "Too many header fields.");
    request.headers.push_back(Header{lower(name), std::string(value)});
    return std::nullopt;
}

}  // namespace

bool is_token_char(unsigned char c) noexcept {
    if (c >= '0' && c <= '9') return true;
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return true;
    return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

bool iequals(std::string_view a, std::string_view b) noexcept {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               const auto lx = static_cast<unsigned char>(x), ly = static_cast<unsigned char>(y);
               return (lx == ly) ||
                      ((lx | 0x20) == (ly | 0x20) && (lx | 0x20) >= 'a' && (lx | 0x20) <= 'z');
           });
}

const std::string* Request::header(std::string_view name) const {
    for (const auto& h : headers) {
        if (iequals(h.name, name)) return &h.value;
    }
    return nullptr;
}

ParseResult parse_request(std::string_view bytes) {
    ParseResult result;
    Request& request = result.request;
    std::size_t pos = 0;
    // RFC 9112 asks servers to ignore empty lines before the request line; allow a few.
    for (int skipped = 0; skipped < 4; ++skipped) {
        if (bytes.substr(pos, 2) == "\r\n") {
            pos += 2;
        } else if (bytes.substr(pos, 1) == "\n") {
            pos += 1;
        } else {
            break;
        }
    }
    const auto first = next_line(bytes, pos);
    if (!first) {
        if (unfinished_length(bytes, pos) > kMaxRequestLine) {
            return fail(414, "The request line is too long.");
        }
        return result;
    }
    if (auto error = parse_request_line(first->text, request)) return std::move(*error);
    pos = first->next;
    if (request.simple()) {
        result.state = ParseState::done;
        result.consumed = pos;
        return result;
    }
    const std::size_t headers_start = pos;
    while (true) {
        const auto line = next_line(bytes, pos);
        if (!line) {
            if (unfinished_length(bytes, pos) > kMaxHeaderLine) {
                return fail(431, "A header line is too long.");
            }
            if (bytes.size() - headers_start > kMaxHeaderBytes)
                return fail(431, "The header block is too large.");
            return result;
        }
        if (line->next - headers_start > kMaxHeaderBytes + 2)
            return fail(431, "The header block is too large.");
        if (line->text.empty()) {
            result.state = ParseState::done;
            result.consumed = line->next;
            return result;
        }
        if (auto error = parse_header_line(line->text, request)) return std::move(*error);
        pos = line->next;
    }
}

}  // namespace lab
