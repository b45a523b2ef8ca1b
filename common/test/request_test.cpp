// Unit tests of the request parser: bytes in, ParseResult out, no sockets.
#include "lab/request.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "test_support.hpp"

namespace lab {
// Lets failure messages name the state instead of dumping its bytes.
void PrintTo(ParseState state, std::ostream* os) {
    switch (state) {
        case ParseState::incomplete:
            *os << "incomplete";
            break;
        case ParseState::done:
            *os << "done";
            break;
        case ParseState::failed:
            *os << "failed";
            break;
    }
}
}  // namespace lab

namespace {

using lab::kMaxHeaderBytes;
using lab::kMaxHeaderCount;
using lab::kMaxHeaderLine;
using lab::kMaxRequestLine;
using lab::parse_request;
using lab::ParseResult;
using lab::ParseState;
using lab::RequestParser;
using lab::test::visible;
using namespace std::string_view_literals;

// A request line of exactly @p length bytes: `GET /aaa…a HTTP/1.0`.
std::string request_line_of_length(std::size_t length) {
    const std::string prefix = "GET /";
    const std::string suffix = " HTTP/1.0";
    return prefix + std::string(length - prefix.size() - suffix.size(), 'a') + suffix;
}

// A header line of exactly @p length bytes (without line ending): `X: aaa…a`.
std::string header_line_of_length(std::size_t length) {
    return "X: " + std::string(length - 3, 'a');
}

// ---------------------------------------------------------------------------------------------
// Well-formed requests

TEST(ParseRequest, ParsesRequestLineAndHeadersWithCrlf) {
    const std::string raw =
        "GET /index.html HTTP/1.0\r\nHost: example.org\r\nUser-Agent: \t test/1.0 \t\r\n\r\n";
    const auto result = parse_request(raw);
    ASSERT_EQ(result.state, ParseState::done) << result.reason;
    EXPECT_EQ(result.consumed, raw.size());
    const auto& request = result.request;
    EXPECT_EQ(request.method, "GET");
    EXPECT_EQ(request.target, "/index.html");
    EXPECT_EQ(request.request_line, "GET /index.html HTTP/1.0");
    EXPECT_EQ(request.version_major, 1);
    EXPECT_EQ(request.version_minor, 0);
    EXPECT_FALSE(request.simple());
    ASSERT_EQ(request.headers.size(), 2u);
    EXPECT_EQ(request.headers[0].name, "host");
    EXPECT_EQ(request.headers[0].value, "example.org");
    EXPECT_EQ(request.headers[1].name, "user-agent");
    EXPECT_EQ(request.headers[1].value, "test/1.0");
}

TEST(ParseRequest, AcceptsBareLfLineEndings) {
    const std::string raw = "HEAD /a.txt HTTP/1.0\nAccept: */*\n\n";
    const auto result = parse_request(raw);
    ASSERT_EQ(result.state, ParseState::done) << result.reason;
    EXPECT_EQ(result.consumed, raw.size());
    EXPECT_EQ(result.request.method, "HEAD");
    EXPECT_EQ(result.request.target, "/a.txt");
    EXPECT_EQ(result.request.request_line, "HEAD /a.txt HTTP/1.0");
    ASSERT_EQ(result.request.headers.size(), 1u);
    EXPECT_EQ(result.request.headers[0].name, "accept");
    EXPECT_EQ(result.request.headers[0].value, "*/*");
}

TEST(ParseRequest, ConsumedStopsAtTheBlankLine) {
    const std::string head = "POST /form HTTP/1.0\r\nContent-Length: 4\r\n\r\n";
    const auto result = parse_request(head + "BODY");
    ASSERT_EQ(result.state, ParseState::done) << result.reason;
    EXPECT_EQ(result.consumed, head.size());
}

TEST(ParseRequest, RequestWithoutHeaders) {
    const std::string raw = "GET / HTTP/1.0\r\n\r\n";
    const auto result = parse_request(raw);
    ASSERT_EQ(result.state, ParseState::done) << result.reason;
    EXPECT_EQ(result.consumed, raw.size());
    EXPECT_TRUE(result.request.headers.empty());
    EXPECT_EQ(result.request.target, "/");
}

TEST(ParseRequest, Http11ParsesWithMinorVersionOne) {
    const auto result = parse_request("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_EQ(result.state, ParseState::done) << result.reason;
    EXPECT_EQ(result.request.version_major, 1);
    EXPECT_EQ(result.request.version_minor, 1);
    EXPECT_FALSE(result.request.simple());
}

TEST(ParseRequest, MethodsAreCaseSensitiveAndAnyTokenParses) {
    for (const std::string method : {"get", "BREW", "DELETE", "X-CUSTOM!"}) {
        SCOPED_TRACE(method);
        const auto result = parse_request(method + " / HTTP/1.0\r\n\r\n");
        ASSERT_EQ(result.state, ParseState::done) << result.reason;
        EXPECT_EQ(result.request.method, method);
    }
}

TEST(ParseRequest, KeepsQueryInTarget) {
    const auto result = parse_request("GET /a.txt?x=1&y=2 HTTP/1.0\r\n\r\n");
    ASSERT_EQ(result.state, ParseState::done) << result.reason;
    EXPECT_EQ(result.request.target, "/a.txt?x=1&y=2");
}

TEST(ParseRequest, EmptyHeaderValueIsAllowed) {
    const auto result = parse_request("GET / HTTP/1.0\r\nX-Empty:\r\nX-Blank:   \r\n\r\n");
    ASSERT_EQ(result.state, ParseState::done) << result.reason;
    ASSERT_EQ(result.request.headers.size(), 2u);
    EXPECT_EQ(result.request.headers[0].name, "x-empty");
    EXPECT_EQ(result.request.headers[0].value, "");
    EXPECT_EQ(result.request.headers[1].value, "");
}

TEST(ParseRequest, HeaderValueKeepsInnerSpacesAndColons) {
    const auto result = parse_request("GET / HTTP/1.0\r\nX-Time:  a: b  c \r\n\r\n");
    ASSERT_EQ(result.state, ParseState::done) << result.reason;
    ASSERT_EQ(result.request.headers.size(), 1u);
    EXPECT_EQ(result.request.headers[0].value, "a: b  c");
}

TEST(ParseRequest, HeaderLookupIsCaseInsensitiveAndReturnsFirst) {
    const auto result = parse_request(
        "GET / HTTP/1.0\r\nHOST: first\r\nIf-Modified-Since: never\r\nhost: second\r\n\r\n");
    ASSERT_EQ(result.state, ParseState::done) << result.reason;
    const auto& request = result.request;
    for (const auto name : {"host"sv, "Host"sv, "HOST"sv, "hOsT"sv}) {
        const std::string* value = request.header(name);
        ASSERT_NE(value, nullptr) << name;
        EXPECT_EQ(*value, "first") << name;
    }
    const std::string* ims = request.header("if-modified-since");
    ASSERT_NE(ims, nullptr);
    EXPECT_EQ(*ims, "never");
    EXPECT_EQ(request.header("content-length"), nullptr);
    EXPECT_EQ(request.header("hos"), nullptr);
}

// ---------------------------------------------------------------------------------------------
// Absolute-form targets are reduced to origin form

struct TargetCase {
    std::string_view raw_target;
    std::string_view expected;
};

void PrintTo(const TargetCase& c, std::ostream* os) {
    *os << visible(c.raw_target) << " -> " << c.expected;
}

class AbsoluteTarget : public testing::TestWithParam<TargetCase> {};

TEST_P(AbsoluteTarget, ReducesToPath) {
    const auto& param = GetParam();
    const auto result = parse_request("GET " + std::string(param.raw_target) + " HTTP/1.0\r\n\r\n");
    ASSERT_EQ(result.state, ParseState::done) << result.reason;
    EXPECT_EQ(result.request.target, param.expected);
}

INSTANTIATE_TEST_SUITE_P(ParseRequest, AbsoluteTarget,
                         testing::Values(TargetCase{"http://host/path", "/path"},
                                         TargetCase{"http://example.org:8080/a/b.txt", "/a/b.txt"},
                                         TargetCase{"HTTP://Host/p?q=1", "/p?q=1"},
                                         TargetCase{"HtTp://host/x", "/x"},
                                         TargetCase{"https://host/secure", "/secure"},
                                         TargetCase{"HTTPS://host/secure", "/secure"},
                                         TargetCase{"http://host", "/"},
                                         TargetCase{"http://host/", "/"}));

// ---------------------------------------------------------------------------------------------
// HTTP/0.9 Simple-Request

TEST(ParseRequest, ConnectKeepsItsAuthorityFormTarget) {
    const auto result = parse_request("CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_EQ(result.state, ParseState::done) << result.reason;
    EXPECT_EQ(result.request.method, "CONNECT");
    EXPECT_EQ(result.request.target, "example.com:443");
}

TEST(ParseRequest, OptionsKeepsItsAsteriskTarget) {
    const auto result = parse_request("OPTIONS * HTTP/1.0\r\n\r\n");
    ASSERT_EQ(result.state, ParseState::done) << result.reason;
    EXPECT_EQ(result.request.target, "*");
}

TEST(RequestParser, HeadCutShortByEndOfInputIs400) {
    for (const std::string_view cut : {"GET / HTTP/1.0\r\n"sv, "GET / HTTP/1.0\r\nHost: x\r\n"sv,
                                       "GET / HTTP/1.0\r\n\r"sv, "GET / HT"sv, "\r\n"sv}) {
        RequestParser parser;
        ASSERT_EQ(parser.parse(cut).state, ParseState::incomplete) << visible(cut);
        const ParseResult& result = parser.end_of_input(cut);
        EXPECT_EQ(result.state, ParseState::failed) << visible(cut);
        EXPECT_EQ(result.status, 400) << visible(cut);
    }
}

TEST(RequestParser, EndOfInputLeavesNothingAndFinishedHeadsAlone) {
    RequestParser silent;
    EXPECT_EQ(silent.end_of_input("").state, ParseState::incomplete);  // nobody to answer
    const std::string_view whole = "GET / HTTP/1.0\r\n\r\n";
    RequestParser done;
    ASSERT_EQ(done.parse(whole).state, ParseState::done);
    EXPECT_EQ(done.end_of_input(whole).state, ParseState::done);
    const std::string_view bad = "GET / HTTP/9.9\r\n";
    RequestParser failed;
    ASSERT_EQ(failed.parse(bad).state, ParseState::failed);
    EXPECT_EQ(failed.end_of_input(bad).status, 400);
}

TEST(ParseRequest, SimpleRequestIsDoneAfterItsLine) {
    for (const std::string raw : {"GET /path\r\n", "GET /path\n"}) {
        SCOPED_TRACE(visible(raw));
        const auto result = parse_request(raw);
        ASSERT_EQ(result.state, ParseState::done) << result.reason;
        EXPECT_EQ(result.consumed, raw.size());
        EXPECT_EQ(result.request.method, "GET");
        EXPECT_EQ(result.request.target, "/path");
        EXPECT_EQ(result.request.version_major, 0);
        EXPECT_TRUE(result.request.simple());
        EXPECT_TRUE(result.request.headers.empty());
        EXPECT_EQ(result.request.request_line, "GET /path");
    }
}

TEST(ParseRequest, SimpleRequestDoesNotWaitForHeaders) {
    // Anything after a 0.9 request line is not part of the head.
    const auto result = parse_request("GET /path\r\nHost: x\r\n");
    ASSERT_EQ(result.state, ParseState::done) << result.reason;
    EXPECT_EQ(result.consumed, std::string_view("GET /path\r\n").size());
    EXPECT_TRUE(result.request.simple());
}

TEST(ParseRequest, SimpleRequestOnlyForGet) {
    for (const std::string raw : {"HEAD /x\r\n", "HEAD /x\r\n\r\n", "POST /x\r\n"}) {
        SCOPED_TRACE(visible(raw));
        const auto result = parse_request(raw);
        ASSERT_EQ(result.state, ParseState::failed);
        EXPECT_EQ(result.status, 400);
    }
}

// ---------------------------------------------------------------------------------------------
// Incomplete input

TEST(ParseRequest, EveryProperPrefixIsIncomplete) {
    const std::string raw = "GET /dir/file.txt HTTP/1.0\r\nHost: example\r\nAccept: */*\r\n\r\n";
    for (std::size_t n = 0; n < raw.size(); ++n) {
        const auto prefix = std::string_view(raw).substr(0, n);
        const auto result = parse_request(prefix);
        EXPECT_EQ(result.state, ParseState::incomplete) << "prefix: " << visible(prefix);
    }
    EXPECT_EQ(parse_request(raw).state, ParseState::done);
}

TEST(ParseRequest, EveryProperPrefixIsIncompleteWithBareLf) {
    const std::string raw = "GET /x HTTP/1.0\nHost: example\n\n";
    for (std::size_t n = 0; n < raw.size(); ++n) {
        const auto prefix = std::string_view(raw).substr(0, n);
        const auto result = parse_request(prefix);
        EXPECT_EQ(result.state, ParseState::incomplete) << "prefix: " << visible(prefix);
    }
    EXPECT_EQ(parse_request(raw).state, ParseState::done);
}

// ---------------------------------------------------------------------------------------------
// Malformed requests: 400

struct BadCase {
    std::string_view raw;
    std::string_view why;
};

void PrintTo(const BadCase& c, std::ostream* os) {
    *os << c.why << ": " << visible(c.raw);
}

class BadRequest : public testing::TestWithParam<BadCase> {};

TEST_P(BadRequest, FailsWith400) {
    const auto result = parse_request(GetParam().raw);
    ASSERT_EQ(result.state, ParseState::failed);
    EXPECT_EQ(result.status, 400);
    EXPECT_FALSE(result.reason.empty());
}

INSTANTIATE_TEST_SUITE_P(
    RequestLine, BadRequest,
    testing::Values(BadCase{"GET\r\n\r\n"sv, "method only"},
                    BadCase{" / HTTP/1.0\r\n\r\n"sv, "empty method"},
                    BadCase{"GET  / HTTP/1.0\r\n\r\n"sv, "double space before target"},
                    BadCase{"GET /  HTTP/1.0\r\n\r\n"sv, "double space before version"},
                    BadCase{"GET / HTTP/1.0 \r\n\r\n"sv, "trailing space"},
                    BadCase{"GET / \r\n\r\n"sv, "empty version"},
                    BadCase{"GET / HTTP/1.0 extra\r\n\r\n"sv, "four parts"},
                    BadCase{"GET / HTTP/9.9\r\n\r\n"sv, "version 9.9"},
                    BadCase{"GET / HTTP/1.11\r\n\r\n"sv, "version 1.11"},
                    BadCase{"GET / HTTP/2.0\r\n\r\n"sv, "version 2.0"},
                    BadCase{"GET / http/1.0\r\n\r\n"sv, "lower-case protocol"},
                    BadCase{"GET / HTTP/1\r\n\r\n"sv, "version without minor"},
                    BadCase{"GET / HTTP/1.x\r\n\r\n"sv, "version minor not a digit"},
                    BadCase{"GET / HTTP/\r\n\r\n"sv, "version without numbers"},
                    BadCase{"GET / FTP/1.0\r\n\r\n"sv, "wrong protocol"},
                    BadCase{"GET * HTTP/1.0\r\n\r\n"sv, "asterisk target"},
                    BadCase{"GET ../x HTTP/1.0\r\n\r\n"sv, "relative climbing target"},
                    BadCase{"GET x HTTP/1.0\r\n\r\n"sv, "relative target"},
                    BadCase{"GET ftp://host/x HTTP/1.0\r\n\r\n"sv, "other scheme"},
                    BadCase{"GE(T / HTTP/1.0\r\n\r\n"sv, "method with ("},
                    BadCase{"G@T / HTTP/1.0\r\n\r\n"sv, "method with @"},
                    BadCase{"GET: / HTTP/1.0\r\n\r\n"sv, "method with :"},
                    BadCase{"G\"T / HTTP/1.0\r\n\r\n"sv, "method with quote"},
                    BadCase{"G\0T / HTTP/1.0\r\n\r\n"sv, "NUL in method"},
                    BadCase{"GET /a\0b HTTP/1.0\r\n\r\n"sv, "NUL in target"},
                    BadCase{"GET /a\rb HTTP/1.0\r\n\r\n"sv, "bare CR in target"},
                    BadCase{"GET /a\x1b[31m HTTP/1.0\r\n\r\n"sv, "ESC in target"},
                    BadCase{"GET /a\x7f HTTP/1.0\r\n\r\n"sv, "DEL in target"},
                    BadCase{"GET /a\tb HTTP/1.0\r\n\r\n"sv, "tab in target"},
                    BadCase{"GET\t/ HTTP/1.0\r\n\r\n"sv, "tab as separator"},
                    BadCase{"GET / HTTP/1.0\r\r\n\r\n"sv, "bare CR at end of line"},
                    BadCase{"HEAD /x\r\n"sv, "0.9 request with HEAD"}));

INSTANTIATE_TEST_SUITE_P(
    Headers, BadRequest,
    testing::Values(BadCase{"GET / HTTP/1.0\r\nHost :x\r\n\r\n"sv, "space before colon"},
                    BadCase{"GET / HTTP/1.0\r\nHost\t: x\r\n\r\n"sv, "tab before colon"},
                    BadCase{"GET / HTTP/1.0\r\nHost x\r\n\r\n"sv, "no colon"},
                    BadCase{"GET / HTTP/1.0\r\n: x\r\n\r\n"sv, "empty name"},
                    BadCase{"GET / HTTP/1.0\r\nA: b\r\n folded\r\n\r\n"sv, "obs-fold with space"},
                    BadCase{"GET / HTTP/1.0\r\nA: b\r\n\tfolded\r\n\r\n"sv, "obs-fold with tab"},
                    BadCase{"GET / HTTP/1.0\r\n X: y\r\n\r\n"sv, "first header indented"},
                    BadCase{"GET / HTTP/1.0\r\nX(y): z\r\n\r\n"sv, "non-token name"},
                    BadCase{"GET / HTTP/1.0\r\nX\0Y: z\r\n\r\n"sv, "NUL in name"},
                    BadCase{"GET / HTTP/1.0\r\nX: a\0b\r\n\r\n"sv, "NUL in value"},
                    BadCase{"GET / HTTP/1.0\r\nX: a\rb\r\n\r\n"sv, "bare CR in value"},
                    BadCase{"GET / HTTP/1.0\r\nX: a\x1b[2Jb\r\n\r\n"sv, "ESC in value"},
                    BadCase{"GET / HTTP/1.0\r\nX: a\x7f\r\n\r\n"sv, "DEL in value"},
                    BadCase{"GET / HTTP/1.0\nX: a\n\x01\n\n"sv, "control byte line"}));

// ---------------------------------------------------------------------------------------------
// Limits

TEST(ParseRequestLimits, RequestLineAtLimitIsAccepted) {
    const std::string line = request_line_of_length(kMaxRequestLine);
    ASSERT_EQ(line.size(), kMaxRequestLine);
    const auto result = parse_request(line + "\r\n\r\n");
    ASSERT_EQ(result.state, ParseState::done) << result.reason;
    EXPECT_EQ(result.request.request_line, line);
}

TEST(ParseRequestLimits, RequestLineOverLimitIs414) {
    const std::string line = request_line_of_length(kMaxRequestLine + 1);
    const auto result = parse_request(line + "\r\n\r\n");
    ASSERT_EQ(result.state, ParseState::failed);
    EXPECT_EQ(result.status, 414);
}

TEST(ParseRequestLimits, EndlessRequestLineFailsWhileIncomplete) {
    const std::string partial = "GET /" + std::string(kMaxRequestLine + 1 - 5, 'a');
    ASSERT_EQ(partial.size(), kMaxRequestLine + 1);
    const auto result = parse_request(partial);
    ASSERT_EQ(result.state, ParseState::failed);
    EXPECT_EQ(result.status, 414);

    const auto longer = parse_request(partial + std::string(10000, 'b'));
    ASSERT_EQ(longer.state, ParseState::failed);
    EXPECT_EQ(longer.status, 414);
}

TEST(ParseRequestLimits, RequestLineAtLimitWithCrStillWaitsForLf) {
    // The CR may be the start of the line ending, so these bytes can still form a request.
    const std::string partial = request_line_of_length(kMaxRequestLine) + "\r";
    EXPECT_EQ(parse_request(partial).state, ParseState::incomplete);
}

TEST(ParseRequestLimits, RequestLineAtLimitWithoutNewlineIsStillIncomplete) {
    const std::string partial = "GET /" + std::string(kMaxRequestLine - 5, 'a');
    ASSERT_EQ(partial.size(), kMaxRequestLine);
    EXPECT_EQ(parse_request(partial).state, ParseState::incomplete);
}

TEST(ParseRequestLimits, HeaderLineAtLimitIsAccepted) {
    const std::string header = header_line_of_length(kMaxHeaderLine);
    const auto result = parse_request("GET / HTTP/1.0\r\n" + header + "\r\n\r\n");
    ASSERT_EQ(result.state, ParseState::done) << result.reason;
    ASSERT_EQ(result.request.headers.size(), 1u);
    EXPECT_EQ(result.request.headers[0].value.size(), kMaxHeaderLine - 3);
}

TEST(ParseRequestLimits, HeaderLineOverLimitIs431) {
    const std::string header = header_line_of_length(kMaxHeaderLine + 1);
    const auto result = parse_request("GET / HTTP/1.0\r\n" + header + "\r\n\r\n");
    ASSERT_EQ(result.state, ParseState::failed);
    EXPECT_EQ(result.status, 431);
}

TEST(ParseRequestLimits, EndlessHeaderLineFailsWhileIncomplete) {
    const std::string partial = "GET / HTTP/1.0\r\n" + header_line_of_length(kMaxHeaderLine + 100);
    const auto result = parse_request(partial);
    ASSERT_EQ(result.state, ParseState::failed);
    EXPECT_EQ(result.status, 431);
}

std::string request_with_headers(std::size_t count, std::string_view method = "GET") {
    std::string raw = std::string(method) + " / HTTP/1.0\r\n";
    for (std::size_t i = 0; i < count; ++i) raw += "X-H" + std::to_string(i) + ": v\r\n";
    return raw + "\r\n";
}

TEST(ParseRequestLimits, MaxHeaderCountIsAccepted) {
    const auto result = parse_request(request_with_headers(kMaxHeaderCount));
    ASSERT_EQ(result.state, ParseState::done) << result.reason;
    EXPECT_EQ(result.request.headers.size(), kMaxHeaderCount);
    EXPECT_EQ(result.request.headers.back().name, "x-h" + std::to_string(kMaxHeaderCount - 1));
}

TEST(ParseRequestLimits, OneHeaderTooManyIs431) {
    const auto result = parse_request(request_with_headers(kMaxHeaderCount + 1));
    ASSERT_EQ(result.state, ParseState::failed);
    EXPECT_EQ(result.status, 431);
}

// @p count header lines of 8000 bytes each (well under the per-line limit).
std::string big_header_block(std::size_t count) {
    std::string block;
    for (std::size_t i = 0; i < count; ++i) {
        block += "X-" + std::to_string(i) + ": " + std::string(8000, 'v') + "\r\n";
    }
    return block;
}

TEST(ParseRequestLimits, LargeHeaderBlockUnderLimitIsAccepted) {
    const std::string block = big_header_block(8);  // about 64 000 bytes
    ASSERT_LT(block.size(), kMaxHeaderBytes);
    const auto result = parse_request("GET / HTTP/1.0\r\n" + block + "\r\n");
    ASSERT_EQ(result.state, ParseState::done) << result.reason;
    EXPECT_EQ(result.request.headers.size(), 8u);
}

TEST(ParseRequestLimits, HeaderBlockOverLimitIs431) {
    const std::string block = big_header_block(9);  // about 72 000 bytes
    ASSERT_GT(block.size(), kMaxHeaderBytes);
    const auto result = parse_request("GET / HTTP/1.0\r\n" + block + "\r\n");
    ASSERT_EQ(result.state, ParseState::failed);
    EXPECT_EQ(result.status, 431);
}

TEST(ParseRequestLimits, HeaderBlockOverLimitFailsWhileIncomplete) {
    const std::string block = big_header_block(9);
    const auto result = parse_request("GET / HTTP/1.0\r\n" + block);
    ASSERT_EQ(result.state, ParseState::failed);
    EXPECT_EQ(result.status, 431);
}

// ---------------------------------------------------------------------------------------------
// Incremental parsing: RequestParser fed the bytes in pieces

/// Inputs up to this size also have every intermediate result checked against parse_request()
/// on the same prefix; that check re-parses each prefix, so it is quadratic by design.
constexpr std::size_t kPrefixCheckLimit = 4096;

// Expects two results to agree in every field a caller can see.
void expect_same_result(const ParseResult& got, const ParseResult& want) {
    EXPECT_EQ(got.state, want.state);
    EXPECT_EQ(got.status, want.status);
    EXPECT_EQ(got.reason, want.reason);
    EXPECT_EQ(got.consumed, want.consumed);
    const lab::Request& a = got.request;
    const lab::Request& b = want.request;
    EXPECT_EQ(a.method, b.method);
    EXPECT_EQ(a.target, b.target);
    EXPECT_EQ(a.request_line, b.request_line);
    EXPECT_EQ(a.version_major, b.version_major);
    EXPECT_EQ(a.version_minor, b.version_minor);
    ASSERT_EQ(a.headers.size(), b.headers.size());
    for (std::size_t i = 0; i < a.headers.size(); ++i) {
        EXPECT_EQ(a.headers[i].name, b.headers[i].name) << "header " << i;
        EXPECT_EQ(a.headers[i].value, b.headers[i].value) << "header " << i;
    }
}

// Feeds @p raw to a fresh parser @p piece bytes at a time (all at once when 0). Until the
// result is final, each call must answer what parse_request() answers for the same prefix.
ParseResult feed_in_pieces(std::string_view raw, std::size_t piece) {
    RequestParser parser;
    std::size_t size = 0;
    do {
        size = piece == 0 ? raw.size() : std::min(raw.size(), size + piece);
        const std::string_view prefix = raw.substr(0, size);
        const bool was_incomplete = parser.result().state == ParseState::incomplete;
        const ParseResult& result = parser.parse(prefix);
        EXPECT_EQ(&result, &parser.result());
        if (was_incomplete && raw.size() <= kPrefixCheckLimit) {
            SCOPED_TRACE("prefix: " + visible(prefix));
            expect_same_result(result, parse_request(prefix));
        }
    } while (size < raw.size());
    EXPECT_LE(parser.scanned(), 2 * raw.size());
    return parser.result();
}

struct SplitCase {
    std::string why;
    std::string raw;
    ParseState state;  ///< Expected outcome on the whole input, so the table cannot drift.
    int status = 0;    ///< Expected status when failed.
};

void PrintTo(const SplitCase& c, std::ostream* os) {
    *os << c.why << " (" << c.raw.size() << " bytes)";
}

std::vector<SplitCase> split_cases() {
    const std::string ok_line = "GET / HTTP/1.0\r\n";
    const auto done = ParseState::done;
    const auto failed = ParseState::failed;
    const auto incomplete = ParseState::incomplete;
    return {
        {"CRLF head", "GET /a?b HTTP/1.1\r\nHost: x\r\nAccept:  */* \r\n\r\n", done},
        {"bare LF head", "HEAD /a.txt HTTP/1.0\nAccept: */*\n\n", done},
        {"mixed line endings", "GET / HTTP/1.0\nA: 1\r\nB: 2\n\r\n", done},
        {"body after the head", "POST /f HTTP/1.0\r\nContent-Length: 4\r\n\r\nBODY", done},
        {"absolute-form target", "GET http://host/p HTTP/1.0\r\n\r\n", done},
        {"HTTP/0.9 CRLF", "GET /path\r\n", done},
        {"HTTP/0.9 LF, more bytes after", "GET /path\nHost: x\n\n", done},
        {"HTTP/0.9 with HEAD", "HEAD /x\r\n\r\n", failed, 400},
        {"leading blank lines", "\r\n\nGET / HTTP/1.0\r\n\r\n", done},
        {"four leading blank lines", "\r\n\n\r\n\nGET / HTTP/1.0\n\n", done},
        {"five leading blank lines", "\n\n\n\n\nGET / HTTP/1.0\n\n", failed, 400},
        {"CR alone", "\r", incomplete},
        {"CR then a request", "\rGET / HTTP/1.0\r\n\r\n", failed, 400},
        {"head still arriving", "GET / HTTP/1.0\r\nHost: x\r\n\r", incomplete},
        {"method only", "GET\r\n\r\n", failed, 400},
        {"unsupported version", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", failed, 400},
        {"NUL in target", std::string("GET /a\0b HTTP/1.0\r\n\r\n", 22), failed, 400},
        {"bare CR in request line", "GET / HTTP/1.0\r\r\n\r\n", failed, 400},
        {"header without colon", ok_line + "Host x\r\n\r\n", failed, 400},
        {"folded header", ok_line + "A: b\r\n folded\r\n\r\n", failed, 400},
        {"control byte in value", ok_line + "X: a\x1b b\r\n\r\n", failed, 400},
        {"request line at limit", request_line_of_length(kMaxRequestLine) + "\r\n\r\n", done},
        {"request line over limit", request_line_of_length(kMaxRequestLine + 1) + "\r\n", failed,
         414},
        {"endless request line", "GET /" + std::string(kMaxRequestLine + 10, 'a'), failed, 414},
        {"header line at limit", ok_line + header_line_of_length(kMaxHeaderLine) + "\r\n\r\n",
         done},
        {"header line over limit", ok_line + header_line_of_length(kMaxHeaderLine + 1) + "\r\n\r\n",
         failed, 431},
        {"endless header line", ok_line + header_line_of_length(kMaxHeaderLine + 10), failed, 431},
        {"most headers", request_with_headers(kMaxHeaderCount), done},
        {"one header too many", request_with_headers(kMaxHeaderCount + 1), failed, 431},
        {"header block under limit", ok_line + big_header_block(8) + "\r\n", done},
        {"header block over limit", ok_line + big_header_block(9) + "\r\n", failed, 431},
        {"header block over limit, unfinished", ok_line + big_header_block(9), failed, 431},
    };
}

class SplitInput : public testing::TestWithParam<SplitCase> {};

TEST_P(SplitInput, EveryWayOfSplittingGivesTheWholeResult) {
    const SplitCase& param = GetParam();
    const ParseResult whole = parse_request(param.raw);
    ASSERT_EQ(whole.state, param.state) << whole.reason;
    ASSERT_EQ(whole.status, param.status) << whole.reason;
    for (const std::size_t piece : {1, 2, 3, 7, 0}) {
        SCOPED_TRACE(piece == 0 ? "whole" : "pieces of " + std::to_string(piece));
        expect_same_result(feed_in_pieces(param.raw, piece), whole);
    }
}

INSTANTIATE_TEST_SUITE_P(RequestParser, SplitInput, testing::ValuesIn(split_cases()));

TEST(RequestParser, CrlfSplitBetweenCalls) {
    const std::string raw = "\r\nGET / HTTP/1.0\r\nHost: x\r\n\r\n";
    for (std::size_t cr = raw.find('\r'); cr != std::string::npos; cr = raw.find('\r', cr + 1)) {
        SCOPED_TRACE("split after byte " + std::to_string(cr));
        RequestParser parser;
        EXPECT_EQ(parser.parse(std::string_view(raw).substr(0, cr + 1)).state,
                  ParseState::incomplete);
        expect_same_result(parser.parse(raw), parse_request(raw));
    }
}

TEST(RequestParser, DoneOrFailedResultStaysPut) {
    const std::string head = "GET / HTTP/1.0\r\n\r\n";
    RequestParser done;
    ASSERT_EQ(done.parse(head).state, ParseState::done);
    const ParseResult& again = done.parse(head + "GET /other HTTP/1.0\r\nbad line\r\n\r\n");
    EXPECT_EQ(again.state, ParseState::done);
    EXPECT_EQ(again.consumed, head.size());
    EXPECT_EQ(again.request.target, "/");

    RequestParser failed;
    ASSERT_EQ(failed.parse("GET\r\n").state, ParseState::failed);
    const std::string reason = failed.result().reason;
    EXPECT_EQ(failed.parse("GET\r\nHost: x\r\n\r\n").reason, reason);
    EXPECT_EQ(failed.result().state, ParseState::failed);
}

// A quadratic parser (parse_request() on every prefix) would examine about N * N / 2 bytes
// here; the incremental one looks at each byte once to find line ends and once more to parse
// its line.
TEST(RequestParser, OneByteAtATimeCostsLinearWork) {
    std::string raw = "GET / HTTP/1.0\r\n";
    for (int i = 0; raw.size() < std::size_t{60} * 1024; ++i) {
        raw += "X-" + std::to_string(i) + ": " + std::string(1000, 'v') + "\r\n";
    }
    raw += "\r\n";
    ASSERT_LE(raw.size() - 16, kMaxHeaderBytes);
    RequestParser parser;
    for (std::size_t n = 1; n <= raw.size(); ++n) parser.parse(std::string_view(raw).substr(0, n));
    ASSERT_EQ(parser.result().state, ParseState::done) << parser.result().reason;
    EXPECT_EQ(parser.result().consumed, raw.size());
    EXPECT_GE(parser.scanned(), raw.size());      // every byte was looked at...
    EXPECT_LE(parser.scanned(), 2 * raw.size());  // ...and none more than twice
}

TEST(RequestParser, EndlessLineOneByteAtATimeCostsLinearWork) {
    const std::string raw = "GET / HTTP/1.0\r\n" + header_line_of_length(kMaxHeaderLine + 1);
    RequestParser parser;
    for (std::size_t n = 1; n <= raw.size(); ++n) parser.parse(std::string_view(raw).substr(0, n));
    ASSERT_EQ(parser.result().state, ParseState::failed);
    EXPECT_EQ(parser.result().status, 431);
    EXPECT_LE(parser.scanned(), 2 * raw.size());
}

// ---------------------------------------------------------------------------------------------
// The request line survives a later failure, so a HEAD request never gets a body

TEST(RequestParser, BadHeaderLineAfterHeadKeepsTheRequestLine) {
    const std::string raw = "HEAD /x HTTP/1.0\r\nHost: a\r\nno colon here\r\n\r\n";
    for (const std::size_t piece : {1, 0}) {
        SCOPED_TRACE(piece == 0 ? "whole" : "one byte at a time");
        const ParseResult result = feed_in_pieces(raw, piece);
        ASSERT_EQ(result.state, ParseState::failed);
        EXPECT_EQ(result.status, 400);
        EXPECT_EQ(result.request.method, "HEAD");
        EXPECT_EQ(result.request.target, "/x");
        EXPECT_EQ(result.request.request_line, "HEAD /x HTTP/1.0");
        EXPECT_EQ(result.request.version_major, 1);
        EXPECT_EQ(result.request.version_minor, 0);
        EXPECT_FALSE(result.request.simple());
    }
}

TEST(RequestParser, TooManyHeadersAfterHeadKeepsTheMethod) {
    const ParseResult result = parse_request(request_with_headers(kMaxHeaderCount + 1, "HEAD"));
    ASSERT_EQ(result.state, ParseState::failed);
    EXPECT_EQ(result.status, 431);
    EXPECT_EQ(result.request.method, "HEAD");
    EXPECT_EQ(result.request.headers.size(), kMaxHeaderCount);
}

TEST(RequestParser, OversizedHeadersAfterHeadKeepTheMethod) {
    const std::string line = "HEAD / HTTP/1.0\r\n";
    for (const std::string& raw : {line + big_header_block(9) + "\r\n", line + big_header_block(9),
                                   line + header_line_of_length(kMaxHeaderLine + 1)}) {
        SCOPED_TRACE(raw.size());
        const ParseResult result = parse_request(raw);
        ASSERT_EQ(result.state, ParseState::failed);
        EXPECT_EQ(result.status, 431);
        EXPECT_EQ(result.request.method, "HEAD");
    }
}

TEST(RequestParser, IncompleteHeadKnowsItsMethodOnceTheRequestLineArrived) {
    RequestParser parser;
    EXPECT_EQ(parser.parse("HEAD /x HTTP/1.0").request.method, "");
    EXPECT_EQ(parser.parse("HEAD /x HTTP/1.0\r\n").request.method, "HEAD");
    const ParseResult& result = parser.parse("HEAD /x HTTP/1.0\r\nHost: a\r\nAcc");
    EXPECT_EQ(result.state, ParseState::incomplete);
    EXPECT_EQ(result.request.method, "HEAD");
    ASSERT_EQ(result.request.headers.size(), 1u);
    EXPECT_EQ(result.request.headers[0].value, "a");
}

TEST(RequestParser, FailedRequestLineLeavesTheRequestEmpty) {
    const std::string too_long = "HEAD /" + std::string(kMaxRequestLine, 'a');
    for (const std::string& raw :
         {std::string("HEAD /x HTTP/2.0\r\n\r\n"), too_long, too_long + " HTTP/1.0\r\n\r\n"}) {
        SCOPED_TRACE(raw.size());
        const ParseResult result = parse_request(raw);
        ASSERT_EQ(result.state, ParseState::failed);
        EXPECT_TRUE(result.request.method.empty());
        EXPECT_TRUE(result.request.target.empty());
        EXPECT_TRUE(result.request.request_line.empty());
        EXPECT_TRUE(result.request.headers.empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

TEST(IsTokenChar, MatchesRfc9110Tchar) {
    const std::string_view tchar_specials = "!#$%&'*+-.^_`|~";
    for (int c = 0; c < 256; ++c) {
        const auto uc = static_cast<unsigned char>(c);
        const bool alnum =
            (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        const bool expected =
            alnum || tchar_specials.find(static_cast<char>(c)) != std::string_view::npos;
        EXPECT_EQ(lab::is_token_char(uc), expected) << "byte " << c;
    }
}

TEST(Iequals, IgnoresAsciiCaseOnly) {
    EXPECT_TRUE(lab::iequals("Content-Length", "content-LENGTH"));
    EXPECT_TRUE(lab::iequals("", ""));
    EXPECT_FALSE(lab::iequals("host", "hos"));
    EXPECT_FALSE(lab::iequals("host", "hosts"));
    EXPECT_FALSE(lab::iequals("a-b", "a_b"));
    EXPECT_FALSE(lab::iequals("@", "`"));  // 0x40 vs 0x60: not letters, not equal
}

}  // namespace
