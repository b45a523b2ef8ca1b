// Unit tests of reason phrases, error pages and the response head serializer.
#include "lab/response.hpp"

#include <fcntl.h>

#include <gtest/gtest.h>

#include <cctype>
#include <ctime>
#include <string>
#include <string_view>

#include "lab/http_date.hpp"
#include "lab/request.hpp"
#include "test_support.hpp"

namespace {

using lab::Response;
using lab::serialize_head;
using lab::test::visible;

constexpr std::time_t kNow = 784111777;  // Sun, 06 Nov 1994 08:49:37 GMT

// Value of the first extra header called @p name (case-insensitive), or nullptr.
const std::string* find_header(const Response& response, std::string_view name) {
    for (const auto& header : response.headers) {
        if (lab::iequals(header.name, name)) return &header.value;
    }
    return nullptr;
}

std::string lower(std::string text) {
    for (char& ch : text) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return text;
}

bool contains(std::string_view haystack, std::string_view needle) {
    return haystack.find(needle) != std::string_view::npos;
}

TEST(ReasonPhrase, StandardPhrases) {
    struct Case {
        int status;
        std::string_view phrase;
    };
    for (const Case c :
         {Case{200, "OK"}, Case{301, "Moved Permanently"}, Case{304, "Not Modified"},
          Case{400, "Bad Request"}, Case{403, "Forbidden"}, Case{404, "Not Found"},
          Case{408, "Request Timeout"}, Case{414, "URI Too Long"}, Case{429, "Too Many Requests"},
          Case{431, "Request Header Fields Too Large"}, Case{500, "Internal Server Error"},
          Case{501, "Not Implemented"}, Case{503, "Service Unavailable"}}) {
        EXPECT_EQ(lab::reason_phrase(c.status), c.phrase) << c.status;
    }
}

TEST(ReasonPhrase, UnknownStatus) {
    EXPECT_EQ(lab::reason_phrase(799), "Unknown");
    EXPECT_EQ(lab::reason_phrase(0), "Unknown");
}

TEST(ErrorResponse, HtmlBodyWithEscapedDetail) {
    const Response response = lab::error_response(404, "x<y");
    EXPECT_EQ(response.status, 404);
    EXPECT_TRUE(response.send_body);
    EXPECT_FALSE(response.simple);
    EXPECT_FALSE(response.file.valid());
    EXPECT_TRUE(contains(response.body, "x&lt;y")) << response.body;
    EXPECT_FALSE(contains(response.body, "x<y")) << response.body;
    EXPECT_TRUE(contains(lower(response.body), "<html")) << response.body;
    const std::string* type = find_header(response, "Content-Type");
    ASSERT_NE(type, nullptr);
    EXPECT_TRUE(type->starts_with("text/html")) << *type;
    EXPECT_EQ(response.content_length(), response.body.size());
}

TEST(ErrorResponse, DetailCannotInjectMarkup) {
    const Response response = lab::error_response(400, "<script>alert(\"x\")</script>&");
    EXPECT_FALSE(contains(response.body, "<script>")) << response.body;
    EXPECT_TRUE(contains(response.body, "&lt;script&gt;")) << response.body;
}

TEST(HtmlEscape, EscapesMarkupCharacters) {
    EXPECT_EQ(lab::html_escape("plain text"), "plain text");
    EXPECT_EQ(lab::html_escape("<a href=\"x\">&</a>"),
              "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;");
}

TEST(SerializeHead, ErrorResponseHead) {
    const Response response = lab::error_response(404, "no such file");
    const std::string head = serialize_head(response, kNow);
    EXPECT_TRUE(head.starts_with("HTTP/1.0 404 Not Found\r\n")) << visible(head);
    EXPECT_TRUE(contains(head, "\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n")) << visible(head);
    EXPECT_TRUE(contains(head, "\r\nServer: ")) << visible(head);
    EXPECT_TRUE(
        contains(head, "\r\nContent-Length: " + std::to_string(response.body.size()) + "\r\n"))
        << visible(head);
    EXPECT_TRUE(contains(head, "\r\nConnection: close\r\n")) << visible(head);
    EXPECT_TRUE(contains(lower(head), "\r\ncontent-type: text/html")) << visible(head);
    ASSERT_GE(head.size(), 4u);
    EXPECT_TRUE(head.ends_with("\r\n\r\n")) << visible(head);
    EXPECT_EQ(head.find("\r\n\r\n"), head.size() - 4) << "blank line before the end";
}

TEST(SerializeHead, StatusLineForEveryCommonStatus) {
    for (const int status : {200, 301, 400, 403, 414, 429, 431, 500, 501, 503}) {
        Response response;
        response.status = status;
        const std::string head = serialize_head(response, kNow);
        const std::string expected = "HTTP/1.0 " + std::to_string(status) + " " +
                                     std::string(lab::reason_phrase(status)) + "\r\n";
        EXPECT_TRUE(head.starts_with(expected)) << visible(head);
    }
}

TEST(SerializeHead, ExtraHeadersAreIncluded) {
    Response response;
    response.status = 301;
    response.headers.push_back({"Location", "/dir/"});
    const std::string head = serialize_head(response, kNow);
    EXPECT_TRUE(head.starts_with("HTTP/1.0 301 Moved Permanently\r\n")) << visible(head);
    EXPECT_TRUE(contains(head, "\r\nLocation: /dir/\r\n")) << visible(head);
}

TEST(SerializeHead, HeadResponseKeepsFullContentLength) {
    Response response;
    response.body = "hello";
    response.send_body = false;
    const std::string head = serialize_head(response, kNow);
    EXPECT_TRUE(contains(head, "\r\nContent-Length: 5\r\n")) << visible(head);
    EXPECT_EQ(response.body_bytes_sent(), 0u);
}

TEST(SerializeHead, FileBodyUsesFileSize) {
    Response response;
    response.file = lab::Fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(response.file.valid());
    response.file_size = 123456;
    response.body = "ignored";
    const std::string head = serialize_head(response, kNow);
    EXPECT_TRUE(contains(head, "\r\nContent-Length: 123456\r\n")) << visible(head);
    EXPECT_EQ(response.body_bytes_sent(), 123456u);
}

TEST(SerializeHead, SimpleResponseHasNoHead) {
    Response response = lab::error_response(404, "gone");
    response.simple = true;
    EXPECT_EQ(serialize_head(response, kNow), "");
    Response ok;
    ok.body = "x";
    ok.simple = true;
    EXPECT_EQ(serialize_head(ok, kNow), "");
}

TEST(SerializeHead, NotModifiedHasNoContentLength) {
    Response response;
    response.status = 304;
    response.headers.push_back({"Last-Modified", lab::format_http_date(kNow - 10)});
    const std::string head = serialize_head(response, kNow);
    EXPECT_TRUE(head.starts_with("HTTP/1.0 304 Not Modified\r\n")) << visible(head);
    EXPECT_FALSE(contains(head, "Content-Length")) << visible(head);
    EXPECT_TRUE(head.ends_with("\r\n\r\n")) << visible(head);
    EXPECT_EQ(response.body_bytes_sent(), 0u);
}

TEST(SerializeHead, HeaderValuesCannotSplitLines) {
    Response response;
    response.headers.push_back({"X-Test", "a\r\nInjected: yes"});
    response.headers.push_back({"X-Other", "b\nAlso: yes\rc"});
    const std::string head = serialize_head(response, kNow);
    // Every CR is the start of a CRLF and every LF the end of one.
    for (std::size_t i = 0; i < head.size(); ++i) {
        if (head[i] == '\r') {
            ASSERT_LT(i + 1, head.size());
            EXPECT_EQ(head[i + 1], '\n') << "bare CR at " << i << ": " << visible(head);
        } else if (head[i] == '\n') {
            ASSERT_GT(i, 0u);
            EXPECT_EQ(head[i - 1], '\r') << "bare LF at " << i << ": " << visible(head);
        }
    }
    EXPECT_FALSE(contains(head, "\r\nInjected:")) << visible(head);
    EXPECT_FALSE(contains(head, "\r\nAlso:")) << visible(head);
    EXPECT_EQ(head.find("\r\n\r\n"), head.size() - 4) << visible(head);
}

}  // namespace
