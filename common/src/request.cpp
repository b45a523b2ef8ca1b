#include "lab/request.hpp"

#include <algorithm>
#include <optional>

namespace lab {

namespace {

/// Most empty lines skipped before the request line; the next one is taken as the request line.
constexpr int kMaxLeadingBlankLines = 4;

// Why a line was rejected: the status to answer with and a human-readable cause.
struct Failure {
    int status = 400;
    const char* reason = "";
};

// The text of the line from `start` to the LF at `lf`, without its line ending.
std::string_view line_text(std::string_view bytes, std::size_t start, std::size_t lf) {
    std::size_t end = lf;
    if (end > start && bytes[end - 1] == '\r') --end;
    return bytes.substr(start, end - start);
}

// Length of the line still arriving at `pos`, not counting a CR that may start its CRLF.
std::size_t unfinished_length(std::string_view bytes, std::size_t pos) {
    std::size_t length = bytes.size() - pos;
    if (length > 0 && bytes.back() == '\r') --length;
    return length;
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

// The target as the handler sees it. CONNECT's authority form (`host:port`) and OPTIONS's `*`
// are kept as they are: both methods get 501 like any other this server does not implement.
std::optional<std::string> request_target(std::string_view method, std::string_view target) {
    if (method == "CONNECT" || (method == "OPTIONS" && target == "*")) return std::string(target);
    return origin_form(target);
}

// Splits and checks `Method SP Target [SP Version]` into `request`; the failure, if any.
std::optional<Failure> parse_request_line(std::string_view line, Request& request) {
    if (line.size() > kMaxRequestLine) return Failure{414, "The request line is too long."};
    if (has_control(line, false)) return Failure{400, "The request line contains control bytes."};
    request.request_line = std::string(line);
    const std::size_t sp1 = line.find(' ');
    if (sp1 == std::string_view::npos) return Failure{400, "The request line has no target."};
    const std::string_view method = line.substr(0, sp1);
    const std::string_view rest = line.substr(sp1 + 1);
    const std::size_t sp2 = rest.find(' ');
    const std::string_view target = rest.substr(0, sp2);
    if (!is_token(method)) return Failure{400, "The method is not a valid token."};
    if (target.empty()) return Failure{400, "The request target is empty."};
    if (sp2 == std::string_view::npos) {
        // RFC 1945 Simple-Request: `GET target` with no version, answered with the body only.
        if (method != "GET") return Failure{400, "An HTTP/0.9 request must use GET."};
        request.version_major = 0;
        request.version_minor = 9;
    } else if (!parse_version(rest.substr(sp2 + 1), request)) {
        return Failure{400, "The HTTP version is not supported or malformed."};
    }
    auto path = request_target(method, target);
    if (!path) return Failure{400, "The request target must start with '/'."};
    request.method = std::string(method);
    request.target = std::move(*path);
    return std::nullopt;
}

// Parses one `Name: value` line into `request`; the failure, if any.
std::optional<Failure> parse_header_line(std::string_view line, Request& request) {
    if (line.size() > kMaxHeaderLine) return Failure{431, "A header line is too long."};
    if (line.front() == ' ' || line.front() == '\t') {
        // Obsolete line folding: rejected, as RFC 9112 allows, rather than guessed at.
        return Failure{400, "Folded header lines are not accepted."};
    }
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) return Failure{400, "A header line has no colon."};
    const std::string_view name = line.substr(0, colon);
    if (!is_token(name)) return Failure{400, "A header name is empty or not a valid token."};
    std::string_view value = line.substr(colon + 1);
    if (has_control(value, true)) return Failure{400, "A header value contains control bytes."};
    const auto first = value.find_first_not_of(" \t");
    value = first == std::string_view::npos ? std::string_view{} : value.substr(first);
    value = value.substr(0, value.find_last_not_of(" \t") + 1);
    if (request.headers.size() == kMaxHeaderCount) return Failure{431, "Too many header fields."};
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

const ParseResult& RequestParser::parse(std::string_view bytes) {
    if (result_.state != ParseState::incomplete) return result_;
    if (phase_ == Phase::blank_lines && !skip_blank_lines(bytes)) return result_;
    if (phase_ == Phase::request_line) parse_first_line(bytes);
    if (phase_ == Phase::headers && result_.state == ParseState::incomplete) {
        parse_header_lines(bytes);
    }
    return result_;
}

// RFC 9112 asks servers to ignore empty lines before the request line; allow a few. A lone CR
// at the end may still become one, so it leaves the question open until the next byte.
bool RequestParser::skip_blank_lines(std::string_view bytes) {
    while (blank_lines_ < kMaxLeadingBlankLines) {
        const std::string_view ahead = bytes.substr(line_start_, 2);
        if (ahead.empty() || ahead == "\r") return false;
        const std::size_t length = ahead.front() == '\n' ? 1 : ahead == "\r\n" ? 2 : 0;
        if (length == 0) break;
        line_start_ += length;
        scanned_ += length;
        ++blank_lines_;
    }
    phase_ = Phase::request_line;
    searched_ = line_start_;
    return true;
}

// Parses the request line into a scratch Request, so a rejected line leaves `request` empty.
void RequestParser::parse_first_line(std::string_view bytes) {
    const std::size_t lf = find_line_end(bytes);
    if (lf == std::string_view::npos) {
        if (unfinished_length(bytes, line_start_) > kMaxRequestLine) {
            fail(414, "The request line is too long.");
        }
        return;
    }
    const std::string_view line = line_text(bytes, line_start_, lf);
    scanned_ += line.size();
    Request request;
    if (const auto error = parse_request_line(line, request)) {
        return fail(error->status, error->reason);
    }
    result_.request = std::move(request);
    line_start_ = lf + 1;
    if (result_.request.simple()) return finish(line_start_);
    phase_ = Phase::headers;
    headers_start_ = line_start_;
}

// Each complete header line is parsed once; the unfinished one is only checked against limits.
void RequestParser::parse_header_lines(std::string_view bytes) {
    while (true) {
        const std::size_t lf = find_line_end(bytes);
        if (lf == std::string_view::npos) return check_unfinished_header(bytes);
        const std::size_t next = lf + 1;
        if (next - headers_start_ > kMaxHeaderBytes + 2) {
            return fail(431, "The header block is too large.");
        }
        const std::string_view line = line_text(bytes, line_start_, lf);
        if (line.empty()) return finish(next);
        scanned_ += line.size();
        if (const auto error = parse_header_line(line, result_.request)) {
            return fail(error->status, error->reason);
        }
        line_start_ = next;
    }
}

// An endless header line or header block fails as soon as it passes its limit.
void RequestParser::check_unfinished_header(std::string_view bytes) {
    if (unfinished_length(bytes, line_start_) > kMaxHeaderLine) {
        return fail(431, "A header line is too long.");
    }
    if (bytes.size() - headers_start_ > kMaxHeaderBytes) {
        return fail(431, "The header block is too large.");
    }
}

// Searches only the bytes no earlier call has searched, so each byte is looked at once.
std::size_t RequestParser::find_line_end(std::string_view bytes) {
    const std::size_t lf = bytes.find('\n', searched_);
    const std::size_t searched = lf == std::string_view::npos ? bytes.size() : lf + 1;
    scanned_ += searched - searched_;
    searched_ = searched;
    return lf;
}

const ParseResult& RequestParser::end_of_input(std::string_view bytes) {
    if (result_.state == ParseState::incomplete && !bytes.empty()) {
        fail(400, "The request head ended before its blank line.");
    }
    return result_;
}

void RequestParser::fail(int status, const char* reason) {
    result_.state = ParseState::failed;
    result_.status = status;
    result_.reason = reason;
}

void RequestParser::finish(std::size_t consumed) {
    result_.state = ParseState::done;
    result_.consumed = consumed;
}

ParseResult parse_request(std::string_view bytes) {
    RequestParser parser;
    return parser.parse(bytes);
}

}  // namespace lab
