// Unit tests of log-line escaping and the Common Log Format line.
#include "lab/log.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <string>
#include <string_view>

#include "test_support.hpp"

namespace {

using lab::escape_log_text;
using lab::format_access_line;
using lab::test::visible;
using namespace std::string_view_literals;

constexpr std::time_t kRfcExample = 784111777;  // 06/Nov/1994:08:49:37 +0000

// Upper-cases the hex digits of `\xNN` escapes and leaves every other escape alone.
std::string upper_log_hex(const std::string& text) {
    std::string out = text;
    for (std::size_t i = 0; i + 1 < out.size(); ++i) {
        if (out[i] != '\\') continue;
        if (out[i + 1] == 'x' && i + 3 < out.size()) {
            for (std::size_t k = i + 2; k < i + 4; ++k) {
                out[k] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[k])));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    return out;
}

bool has_raw_unsafe_byte(std::string_view text) {
    return std::any_of(text.begin(), text.end(), [](char ch) {
        const auto c = static_cast<unsigned char>(ch);
        return c < 0x20 || c >= 0x7f;
    });
}

TEST(EscapeLogText, PlainTextIsUnchanged) {
    for (const std::string_view text :
         {""sv, "GET / HTTP/1.0"sv, "GET /a%20b?x=1&y=2 HTTP/1.0"sv, "~!@#$%^&*()_+{}|:<>?'"sv}) {
        EXPECT_EQ(escape_log_text(text), text);
    }
}

TEST(EscapeLogText, EscapesControlAndSpecialBytes) {
    struct Case {
        std::string_view raw;
        std::string_view escaped;  // hex digits upper-case
    };
    for (const Case c :
         {Case{"\r"sv, "\\x0D"sv}, Case{"\n"sv, "\\x0A"sv}, Case{"\x1b"sv, "\\x1B"sv},
          Case{"\0"sv, "\\x00"sv}, Case{"\x7f"sv, "\\x7F"sv}, Case{"\t"sv, "\\x09"sv},
          Case{"\xc3\xa9"sv, "\\xC3\\xA9"sv}, Case{"\xff"sv, "\\xFF"sv}, Case{"\""sv, "\\\""sv},
          Case{"\\"sv, "\\\\"sv}, Case{"a\r\nb"sv, "a\\x0D\\x0Ab"sv},
          Case{"GET /\x1b[2J HTTP/1.0"sv, "GET /\\x1B[2J HTTP/1.0"sv},
          Case{"say \"hi\\\""sv, "say \\\"hi\\\\\\\""sv}}) {
        EXPECT_EQ(upper_log_hex(escape_log_text(c.raw)), c.escaped) << visible(c.raw);
    }
}

TEST(EscapeLogText, NoByteValueSurvivesRaw) {
    for (int c = 0; c < 256; ++c) {
        const std::string raw(1, static_cast<char>(c));
        const std::string escaped = escape_log_text(raw);
        EXPECT_FALSE(has_raw_unsafe_byte(escaped)) << "byte " << c << " -> " << visible(escaped);
        const bool plain = c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
        if (plain) {
            EXPECT_EQ(escaped, raw) << "byte " << c;
        } else {
            EXPECT_NE(escaped, raw) << "byte " << c;
        }
    }
}

TEST(FormatAccessLine, CommonLogFormat) {
    EXPECT_EQ(format_access_line("127.0.0.1", kRfcExample, "GET / HTTP/1.0", 200, 123),
              "127.0.0.1 - - [06/Nov/1994:08:49:37 +0000] \"GET / HTTP/1.0\" 200 123\n");
    EXPECT_EQ(format_access_line("10.1.2.3", kRfcExample, "HEAD /x HTTP/1.0", 404, 9876543210),
              "10.1.2.3 - - [06/Nov/1994:08:49:37 +0000] \"HEAD /x HTTP/1.0\" 404 9876543210\n");
}

TEST(FormatAccessLine, EmptyRequestLinePrintsDash) {
    EXPECT_EQ(format_access_line("127.0.0.1", kRfcExample, "", 408, 77),
              "127.0.0.1 - - [06/Nov/1994:08:49:37 +0000] \"-\" 408 77\n");
}

TEST(FormatAccessLine, ForgedLineBreaksStayOnOneLine) {
    const std::string line =
        format_access_line("127.0.0.1", kRfcExample,
                           "GET / HTTP/1.0\r\n1.2.3.4 - - [x] \"GET /admin\" 200 1", 400, 10);
    EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1) << visible(line);
    EXPECT_EQ(line.back(), '\n');
    EXPECT_EQ(line.find('\r'), std::string::npos) << visible(line);
    EXPECT_TRUE(line.starts_with("127.0.0.1 - - [06/Nov/1994:08:49:37 +0000] \"GET / HTTP/1.0"))
        << visible(line);
    EXPECT_TRUE(line.ends_with("\" 400 10\n")) << visible(line);
}

TEST(FormatAccessLine, QuotesInRequestLineAreEscaped) {
    const std::string line =
        format_access_line("127.0.0.1", kRfcExample, "GET /\" 200 1 HTTP/1.0", 400, 5);
    EXPECT_EQ(line,
              "127.0.0.1 - - [06/Nov/1994:08:49:37 +0000] \"GET /\\\" 200 1 HTTP/1.0\" 400 5\n");
}

}  // namespace
