// Unit tests of HTTP date formatting and parsing.
#include "lab/http_date.hpp"

#include <gtest/gtest.h>

#include <ctime>
#include <optional>
#include <string_view>

namespace {

using lab::format_http_date;
using lab::format_log_date;
using lab::parse_http_date;

constexpr std::time_t kRfcExample = 784111777;  // Sun, 06 Nov 1994 08:49:37 GMT

TEST(HttpDate, FormatsRfc1123) {
    EXPECT_EQ(format_http_date(kRfcExample), "Sun, 06 Nov 1994 08:49:37 GMT");
    EXPECT_EQ(format_http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    EXPECT_EQ(format_http_date(951782400), "Tue, 29 Feb 2000 00:00:00 GMT");
    EXPECT_EQ(format_http_date(2147483647), "Tue, 19 Jan 2038 03:14:07 GMT");
}

TEST(HttpDate, ParsesAllThreeForms) {
    EXPECT_EQ(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), std::optional{kRfcExample});
    EXPECT_EQ(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), std::optional{kRfcExample});
    EXPECT_EQ(parse_http_date("Sun Nov  6 08:49:37 1994"), std::optional{kRfcExample});
}

TEST(HttpDate, ParsesOtherDates) {
    EXPECT_EQ(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), std::optional<std::time_t>{0});
    EXPECT_EQ(parse_http_date("Tue, 29 Feb 2000 00:00:00 GMT"),
              std::optional<std::time_t>{951782400});
    EXPECT_EQ(parse_http_date("Fri Dec 31 23:59:59 1999"), std::optional<std::time_t>{946684799});
    EXPECT_EQ(parse_http_date("Friday, 31-Dec-99 23:59:59 GMT"),
              std::optional<std::time_t>{946684799});
}

TEST(HttpDate, RoundTrips) {
    for (const std::time_t t :
         {std::time_t{0}, std::time_t{1}, kRfcExample, std::time_t{951782400},
          std::time_t{1000000000}, std::time_t{1700000000}, std::time_t{1709251199},
          std::time_t{2147483647}, std::time_t{4102444800}}) {
        const auto text = format_http_date(t);
        EXPECT_EQ(parse_http_date(text), std::optional{t}) << text;
    }
}

TEST(HttpDate, RejectsGarbage) {
    for (const std::string_view text : {
             "",
             "garbage",
             "yesterday",
             "Sun, 06 Foo 1994 08:49:37 GMT",
             "Sun, 32 Nov 1994 08:49:37 GMT",
             "Sun, 00 Nov 1994 08:49:37 GMT",
             "Sun, 06 Nov 1994 25:49:37 GMT",
             "Sun, 06 Nov 1994 08:61:37 GMT",
             "Sun, 06 Nov 1994 08:49 GMT",
             "Sun, 06 Nov GMT",
             "Sunday, 06-Nov-94 25:49:37 GMT",
             "Sunday, 32-Nov-94 08:49:37 GMT",
             "Sun Foo  6 08:49:37 1994",
             "Sun Nov 32 08:49:37 1994",
             "Sun Nov  6 25:49:37 1994",
             "1994-11-06T08:49:37Z",
             "784111777",
         }) {
        EXPECT_EQ(parse_http_date(text), std::nullopt) << '"' << text << '"';
    }
}

TEST(HttpDate, FormatsLogDate) {
    EXPECT_EQ(format_log_date(kRfcExample), "06/Nov/1994:08:49:37 +0000");
    EXPECT_EQ(format_log_date(971185736), "10/Oct/2000:13:48:56 +0000");
    EXPECT_EQ(format_log_date(0), "01/Jan/1970:00:00:00 +0000");
}

}  // namespace
