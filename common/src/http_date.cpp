#include "lab/http_date.hpp"

#include <array>
#include <cstdio>

namespace lab {

namespace {

constexpr std::array<std::string_view, 7> kDays = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
constexpr std::array<std::string_view, 12> kMonths = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

std::tm utc(std::time_t t) {
    std::tm tm{};
    gmtime_r(&t, &tm);
    return tm;
}

// A cursor over the date text with the few matchers the three formats need.
struct Scanner {
    std::string_view text;
    std::size_t pos = 0;

    bool literal(std::string_view s) {
        if (text.substr(pos, s.size()) != s) return false;
        pos += s.size();
        return true;
    }
    // Reads between min_digits and max_digits decimal digits.
    bool number(int min_digits, int max_digits, int& out) {
        int value = 0;
        int digits = 0;
        while (digits < max_digits && pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
            value = value * 10 + (text[pos++] - '0');
            ++digits;
        }
        out = value;
        return digits >= min_digits;
    }
    bool month(int& out) {
        for (std::size_t i = 0; i < kMonths.size(); ++i) {
            if (literal(kMonths[i])) {
                out = static_cast<int>(i);
                return true;
            }
        }
        return false;
    }
    bool time(std::tm& tm) {
        return number(2, 2, tm.tm_hour) && literal(":") && number(2, 2, tm.tm_min) &&
               literal(":") && number(2, 2, tm.tm_sec);
    }
    // Skips a day name (short or long) up to and including `until`.
    bool day_name(char until) {
        const std::size_t end = text.find(until, pos);
        if (end == std::string_view::npos || end == pos || end - pos > 9) return false;
        pos = end + 1;
        return true;
    }
    [[nodiscard]] bool at_end() const { return pos == text.size(); }
};

// `Sun, 06 Nov 1994 08:49:37 GMT`
bool parse_rfc1123(std::string_view text, std::tm& tm) {
    Scanner s{text};
    return s.day_name(',') && s.literal(" ") && s.number(2, 2, tm.tm_mday) && s.literal(" ") &&
           s.month(tm.tm_mon) && s.literal(" ") && s.number(4, 4, tm.tm_year) && s.literal(" ") &&
           s.time(tm) && s.literal(" GMT") && s.at_end() && (tm.tm_year -= 1900, true);
}

// `Sunday, 06-Nov-94 08:49:37 GMT`; two-digit years below 70 mean 20xx.
bool parse_rfc850(std::string_view text, std::tm& tm) {
    Scanner s{text};
    if (!(s.day_name(',') && s.literal(" ") && s.number(2, 2, tm.tm_mday) && s.literal("-") &&
          s.month(tm.tm_mon) && s.literal("-") && s.number(2, 2, tm.tm_year) && s.literal(" ") &&
          s.time(tm) && s.literal(" GMT") && s.at_end())) {
        return false;
    }
    if (tm.tm_year < 70) tm.tm_year += 100;
    return true;
}

// `Sun Nov  6 08:49:37 1994`
bool parse_asctime(std::string_view text, std::tm& tm) {
    Scanner s{text};
    if (!(s.day_name(' ') && s.month(tm.tm_mon) && s.literal(" "))) return false;
    s.literal(" ");  // single-digit days are padded with a space
    return s.number(1, 2, tm.tm_mday) && s.literal(" ") && s.time(tm) && s.literal(" ") &&
           s.number(4, 4, tm.tm_year) && s.at_end() && (tm.tm_year -= 1900, true);
}

bool plausible(const std::tm& tm) {
    return tm.tm_mday >= 1 && tm.tm_mday <= 31 && tm.tm_hour <= 23 && tm.tm_min <= 59 &&
           tm.tm_sec <= 60 && tm.tm_year >= 70;
}

}  // namespace

std::string format_http_date(std::time_t t) {
    const std::tm tm = utc(t);
    char buf[40];
    (void)std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT",
                        kDays[static_cast<std::size_t>(tm.tm_wday)].data(), tm.tm_mday,
                        kMonths[static_cast<std::size_t>(tm.tm_mon)].data(), tm.tm_year + 1900,
                        tm.tm_hour, tm.tm_min, tm.tm_sec);
    return buf;
}

std::string format_log_date(std::time_t t) {
    const std::tm tm = utc(t);
    char buf[40];
    (void)std::snprintf(buf, sizeof buf, "%02d/%s/%04d:%02d:%02d:%02d +0000", tm.tm_mday,
                        kMonths[static_cast<std::size_t>(tm.tm_mon)].data(), tm.tm_year + 1900,
                        tm.tm_hour, tm.tm_min, tm.tm_sec);
    return buf;
}

std::optional<std::time_t> parse_http_date(std::string_view text) {
    std::tm tm{};
    if (!parse_rfc1123(text, tm) && !(tm = std::tm{}, parse_rfc850(text, tm)) &&
        !(tm = std::tm{}, parse_asctime(text, tm))) {
        return std::nullopt;
    }
    if (!plausible(tm)) return std::nullopt;
    const int mday = tm.tm_mday;
    const std::time_t t = timegm(&tm);
    if (t == static_cast<std::time_t>(-1) || tm.tm_mday != mday) return std::nullopt;  // 31 Feb
    return t;
}

}  // namespace lab
