/// @file fuzz_request.cpp
/// @brief libFuzzer target: arbitrary bytes through the request parser and target normaliser.
///
/// Beyond "no crash, no sanitizer report", it checks the parser's promises: a finished parse
/// consumed no more than it was given and produced an origin-form target; a failure carries
/// one of the statuses the parser may answer; a normalised path never keeps a `..` segment.
/// It also feeds the same bytes to RequestParser in pieces (cut where the input's own bytes
/// say): until the result is final, every step must equal parse_request() on that prefix,
/// and once final it must never change.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "lab/http_date.hpp"
#include "lab/request.hpp"
#include "lab/resolve.hpp"

namespace {

// Stops the run with a message libFuzzer shows next to the crashing input.
void check(bool ok, const char* what) {
    if (!ok) {
        __builtin_printf("invariant broken: %s\n", what);
        std::abort();
    }
}

// True when two results say the same thing.
bool same(const lab::ParseResult& a, const lab::ParseResult& b) {
    return a.state == b.state && a.status == b.status && a.reason == b.reason &&
           a.consumed == b.consumed && a.request.method == b.request.method &&
           a.request.target == b.request.target &&
           a.request.headers.size() == b.request.headers.size();
}

// Feeds `bytes` in pieces whose lengths come from the bytes themselves (1 to 16).
void check_incremental(std::string_view bytes) {
    lab::RequestParser parser;
    std::size_t fed = 0;
    bool final = false;
    lab::ParseResult settled;
    while (fed < bytes.size()) {
        fed = std::min(bytes.size(), fed + 1 + (static_cast<unsigned char>(bytes[fed]) & 15U));
        const lab::ParseResult& step = parser.parse(bytes.substr(0, fed));
        if (final) {
            check(same(step, settled), "a final result changed");
            continue;
        }
        check(same(step, lab::parse_request(bytes.substr(0, fed))),
              "incremental parse differs from parsing the prefix whole");
        if (step.state != lab::ParseState::incomplete) {
            final = true;
            settled = step;
        }
    }
    check(parser.scanned() <= 2 * bytes.size() + 2, "parser looked at bytes more than twice");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);
    const lab::ParseResult result = lab::parse_request(bytes);
    switch (result.state) {
        case lab::ParseState::incomplete:
            check(size <= lab::kMaxRequestHead + 8, "incomplete beyond every limit");
            break;
        case lab::ParseState::failed:
            check(result.status == 400 || result.status == 414 || result.status == 431,
                  "unexpected failure status");
            check(!result.reason.empty(), "failure without a reason");
            break;
        case lab::ParseState::done: {
            const lab::Request& request = result.request;
            check(result.consumed <= size, "consumed more than given");
            check(!request.method.empty(), "empty method");
            check(!request.target.empty() && request.target.front() == '/',
                  "target not origin-form");
            check(request.headers.size() <= lab::kMaxHeaderCount, "too many headers accepted");
            const lab::NormalizedPath path = lab::normalize_target(request.target);
            if (path.status == 200) {
                const std::string_view p = path.path;
                check(!p.empty() && p.front() == '/', "normalised path not absolute");
                check(p.find("/../") == std::string_view::npos && !p.ends_with("/..") &&
                          p.find("//") == std::string_view::npos,
                      "normalised path keeps a climb or an empty segment");
                check(p.find('\0') == std::string_view::npos, "NUL survived decoding");
            }
            break;
        }
    }
    check_incremental(bytes);
    (void)lab::parse_http_date(bytes);
    return 0;
}
