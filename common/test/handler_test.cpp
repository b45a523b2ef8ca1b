// Unit tests of handle_request(): parsed request + scratch site → response, no sockets.
#include "lab/handler.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <ctime>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "lab/http_date.hpp"
#include "lab/request.hpp"
#include "lab/response.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using lab::Response;
using lab::test::TempDir;
using lab::test::visible;

constexpr std::time_t kMtime = 784111777;                      // Sun, 06 Nov 1994 08:49:37 GMT
constexpr std::time_t kNow = kMtime + std::time_t{24} * 3600;  // a day later
constexpr std::string_view kText = "hello world";

// Sets the modification time of @p path to @p when.
void set_mtime(const fs::path& path, std::time_t when) {
    const timespec times[2] = {{when, 0}, {when, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW), 0) << path;
}

// Value of the first header called @p name (case-insensitive), or nullptr.
const std::string* find_header(const Response& response, std::string_view name) {
    for (const auto& header : response.headers) {
        if (lab::iequals(header.name, name)) return &header.value;
    }
    return nullptr;
}

// Layout: a.txt ("hello world"), page.html, dir/index.html, empty/.
class HandleRequest : public testing::Test {
  protected:
    static void SetUpTestSuite() {
        site_dir_ = std::make_unique<TempDir>("lab-handler");
        set_mtime(site_dir_->write("a.txt", kText), kMtime);
        set_mtime(site_dir_->write("page.html", "<p>page</p>"), kMtime);
        set_mtime(site_dir_->write("dir/index.html", "<h1>dir</h1>"), kMtime);
        site_dir_->mkdir("empty");
        site_.root = lab::DocumentRoot(fs::canonical(site_dir_->path()));
    }
    static void TearDownTestSuite() {
        site_ = lab::Site{};
        site_dir_.reset();
    }

    // Parses @p raw (which must be a valid request head) and handles it.
    static Response handle(const std::string& raw, std::time_t now = kNow) {
        const auto parsed = lab::parse_request(raw);
        EXPECT_EQ(parsed.state, lab::ParseState::done) << visible(raw) << ": " << parsed.reason;
        return lab::handle_request(parsed.request, site_, now);
    }

    // A GET of /a.txt carrying If-Modified-Since: @p date.
    static Response conditional_get(const std::string& date) {
        return handle("GET /a.txt HTTP/1.0\r\nIf-Modified-Since: " + date + "\r\n\r\n");
    }

    static inline std::unique_ptr<TempDir> site_dir_;
    static inline lab::Site site_;
};

TEST_F(HandleRequest, GetFileServesIt) {
    const Response response = handle("GET /a.txt HTTP/1.0\r\n\r\n");
    ASSERT_EQ(response.status, 200) << response.body;
    EXPECT_TRUE(response.file.valid());
    EXPECT_EQ(response.file_size, kText.size());
    EXPECT_EQ(response.content_length(), kText.size());
    EXPECT_TRUE(response.send_body);
    EXPECT_FALSE(response.simple);
    const std::string* type = find_header(response, "Content-Type");
    ASSERT_NE(type, nullptr);
    EXPECT_EQ(*type, "text/plain; charset=utf-8");
    const std::string* modified = find_header(response, "Last-Modified");
    ASSERT_NE(modified, nullptr);
    EXPECT_EQ(*modified, lab::format_http_date(kMtime));
}

TEST_F(HandleRequest, ServedFileDescriptorReadsTheFile) {
    const Response response = handle("GET /a.txt HTTP/1.0\r\n\r\n");
    ASSERT_EQ(response.status, 200);
    ASSERT_TRUE(response.file.valid());
    std::string content(64, '\0');
    const auto n = ::pread(response.file.get(), content.data(), content.size(), 0);
    ASSERT_GE(n, 0);
    content.resize(static_cast<std::size_t>(n));
    EXPECT_EQ(content, kText);
}

TEST_F(HandleRequest, HtmlFileHasHtmlType) {
    const Response response = handle("GET /page.html HTTP/1.0\r\n\r\n");
    ASSERT_EQ(response.status, 200);
    const std::string* type = find_header(response, "Content-Type");
    ASSERT_NE(type, nullptr);
    EXPECT_EQ(*type, "text/html; charset=utf-8");
}

TEST_F(HandleRequest, HeadDescribesButDoesNotSendBody) {
    const Response get = handle("GET /a.txt HTTP/1.0\r\n\r\n");
    const Response head = handle("HEAD /a.txt HTTP/1.0\r\n\r\n");
    ASSERT_EQ(head.status, 200);
    EXPECT_FALSE(head.send_body);
    EXPECT_EQ(head.content_length(), kText.size());
    EXPECT_EQ(head.body_bytes_sent(), 0u);
    for (const auto* name : {"Content-Type", "Last-Modified"}) {
        const std::string* from_get = find_header(get, name);
        const std::string* from_head = find_header(head, name);
        ASSERT_NE(from_get, nullptr) << name;
        ASSERT_NE(from_head, nullptr) << name;
        EXPECT_EQ(*from_head, *from_get) << name;
    }
}

TEST_F(HandleRequest, HeadOfMissingFileSendsNoBody) {
    const Response response = handle("HEAD /missing HTTP/1.0\r\n\r\n");
    EXPECT_EQ(response.status, 404);
    EXPECT_FALSE(response.send_body);
}

TEST_F(HandleRequest, UnknownMethodIs501) {
    for (const std::string method : {"BREW", "get", "Get", "POST", "PUT", "DELETE", "OPTIONS"}) {
        const Response response = handle(method + " / HTTP/1.0\r\n\r\n");
        EXPECT_EQ(response.status, 501) << method;
    }
}

TEST_F(HandleRequest, ConnectAndOptionsInTheirOwnTargetFormsAre501) {
    // CONNECT names a host and port, OPTIONS may name the server itself: both are methods this
    // server does not implement, not malformed requests.
    for (const std::string line :
         {"CONNECT example.com:443 HTTP/1.0", "CONNECT 127.0.0.1:22 HTTP/1.1", "CONNECT / HTTP/1.0",
          "OPTIONS * HTTP/1.0"}) {
        const Response response = handle(line + "\r\n\r\n");
        EXPECT_EQ(response.status, 501) << line;
    }
}

TEST_F(HandleRequest, MissingFileIs404WithHtmlBody) {
    const Response response = handle("GET /missing.txt HTTP/1.0\r\n\r\n");
    EXPECT_EQ(response.status, 404);
    EXPECT_FALSE(response.file.valid());
    EXPECT_FALSE(response.body.empty());
    EXPECT_NE(response.body.find('<'), std::string::npos) << response.body;
    const std::string* type = find_header(response, "Content-Type");
    ASSERT_NE(type, nullptr);
    EXPECT_TRUE(type->starts_with("text/html")) << *type;
}

TEST_F(HandleRequest, ClimbingTargetIs400) {
    EXPECT_EQ(handle("GET /../etc/passwd HTTP/1.0\r\n\r\n").status, 400);
    EXPECT_EQ(handle("GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.0\r\n\r\n").status, 400);
}

TEST_F(HandleRequest, DirectoryWithSlashServesIndex) {
    const Response response = handle("GET /dir/ HTTP/1.0\r\n\r\n");
    ASSERT_EQ(response.status, 200);
    EXPECT_TRUE(response.file.valid());
    EXPECT_EQ(response.file_size, std::string_view("<h1>dir</h1>").size());
}

TEST_F(HandleRequest, DirectoryWithoutIndexIs403) {
    EXPECT_EQ(handle("GET /empty/ HTTP/1.0\r\n\r\n").status, 403);
}

TEST_F(HandleRequest, DirectoryWithoutSlashRedirects) {
    const Response response = handle("GET /dir HTTP/1.0\r\n\r\n");
    ASSERT_EQ(response.status, 301);
    const std::string* location = find_header(response, "Location");
    ASSERT_NE(location, nullptr);
    EXPECT_TRUE(location->ends_with("/dir/")) << *location;
    EXPECT_FALSE(location->starts_with("//")) << *location;
}

TEST_F(HandleRequest, QueryStringIsIgnored) {
    const Response response = handle("GET /a.txt?x=1 HTTP/1.0\r\n\r\n");
    ASSERT_EQ(response.status, 200);
    EXPECT_EQ(response.file_size, kText.size());
}

TEST_F(HandleRequest, IfModifiedSinceEqualIs304) {
    const Response response = conditional_get(lab::format_http_date(kMtime));
    EXPECT_EQ(response.status, 304);
    EXPECT_EQ(response.body_bytes_sent(), 0u);
}

TEST_F(HandleRequest, IfModifiedSinceInOtherFormsIs304) {
    EXPECT_EQ(conditional_get("Sunday, 06-Nov-94 08:49:37 GMT").status, 304);
    EXPECT_EQ(conditional_get("Sun Nov  6 08:49:37 1994").status, 304);
}

TEST_F(HandleRequest, IfModifiedSinceLaterButPastIs304) {
    EXPECT_EQ(conditional_get(lab::format_http_date(kMtime + 3600)).status, 304);
    EXPECT_EQ(conditional_get(lab::format_http_date(kNow)).status, 304);
}

TEST_F(HandleRequest, IfModifiedSinceOlderIs200) {
    const Response response = conditional_get(lab::format_http_date(kMtime - 1));
    EXPECT_EQ(response.status, 200);
    EXPECT_TRUE(response.file.valid());
}

TEST_F(HandleRequest, UnparseableIfModifiedSinceIs200) {
    EXPECT_EQ(conditional_get("yesterday").status, 200);
    EXPECT_EQ(conditional_get("Sun, 32 Nov 1994 08:49:37 GMT").status, 200);
}

TEST_F(HandleRequest, FutureIfModifiedSinceIsIgnored) {
    EXPECT_EQ(conditional_get(lab::format_http_date(kNow + 1000)).status, 200);
}

TEST_F(HandleRequest, IfModifiedSinceOnMissingFileIs404) {
    EXPECT_EQ(handle("GET /missing HTTP/1.0\r\nIf-Modified-Since: " +
                     lab::format_http_date(kMtime) + "\r\n\r\n")
                  .status,
              404);
}

TEST_F(HandleRequest, SimpleRequestGetsSimpleResponse) {
    const Response response = handle("GET /a.txt\r\n");
    EXPECT_EQ(response.status, 200);
    EXPECT_TRUE(response.simple);
    EXPECT_TRUE(response.file.valid());
    EXPECT_EQ(response.file_size, kText.size());
}

TEST_F(HandleRequest, FullRequestGetsFullResponse) {
    EXPECT_FALSE(handle("GET /a.txt HTTP/1.0\r\n\r\n").simple);
    EXPECT_FALSE(handle("GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n").simple);
}

}  // namespace
