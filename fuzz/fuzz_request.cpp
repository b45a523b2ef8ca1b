/// @file fuzz_request.cpp
/// @brief libFuzzer target: arbitrary bytes through the request parser and target normaliser.
///
/// Beyond "no crash, no sanitizer report", it checks the parser's promises: a finished parse
/// consumed no more than it was given and produced an origin-form target; a failure carries
/// one of the statuses the parser may answer; a normalised path never keeps a `..` segment.

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
    (void)lab::parse_http_date(bytes);
    return 0;
}
