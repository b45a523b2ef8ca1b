#include "lab/log.hpp"

#include <atomic>
#include <cerrno>
#include <exception>
#include <mutex>
#include <string>

#include <cstring>

#include <unistd.h>

#include "lab/http_date.hpp"

namespace lab {

namespace {

std::atomic<bool> g_access_log{true};
std::mutex g_name_mutex;
std::string g_program_name = "lab-httpd";

// Writes all of `text` to `fd` in as few write() calls as the kernel allows.
void write_all(int fd, std::string_view text) {
    while (!text.empty()) {
        const ssize_t n = ::write(fd, text.data(), text.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;  // a log that cannot be written must not stop the server
        text.remove_prefix(static_cast<std::size_t>(n));
    }
}

}  // namespace

std::string escape_log_text(std::string_view text) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    out.reserve(text.size());
    for (const char ch : text) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == '"' || c == '\\') {
            out.push_back('\\');
            out.push_back(ch);
        } else if (c < 0x20 || c >= 0x7f) {
            out += "\\x";
            out.push_back(kHex[c >> 4]);
            out.push_back(kHex[c & 15]);
        } else {
            out.push_back(ch);
        }
    }
    return out;
}

std::string format_access_line(std::string_view client, std::time_t when,
                               std::string_view request_line, int status, std::uint64_t bytes) {
    std::string line;
    line.reserve(96 + request_line.size());
    line += escape_log_text(client);
    line += " - - [";
    line += format_log_date(when);
    line += "] \"";
    line += request_line.empty() ? "-" : escape_log_text(request_line);
    line += "\" ";
    line += std::to_string(status);
    line += ' ';
    line += std::to_string(bytes);
    line += '\n';
    return line;
}

std::string errno_text(int err) {
    char buf[256];
    // The GNU strerror_r returns the message, which may or may not be in buf.
    return ::strerror_r(err, buf, sizeof buf);
}

void set_access_log(bool enabled) noexcept {
    g_access_log.store(enabled);
}

void log_access(std::string_view client, std::string_view request_line, int status,
                std::uint64_t bytes) noexcept {
    if (!g_access_log.load(std::memory_order_relaxed)) return;
    try {
        // One write per line: lines from different threads may interleave, never mix.
        write_all(STDOUT_FILENO,
                  format_access_line(client, std::time(nullptr), request_line, status, bytes));
    } catch (const std::exception&) {  // NOLINT(bugprone-empty-catch): the line is lost
    }
}

void set_program_name(std::string_view name) {
    std::lock_guard lock(g_name_mutex);
    g_program_name = name;
}

void log_error(std::string_view message) noexcept {
    try {
        std::string line;
        {
            std::lock_guard lock(g_name_mutex);
            line = g_program_name;
        }
        line += ": ";
        line += escape_log_text(message);
        line += '\n';
        write_all(STDERR_FILENO, line);
    } catch (const std::exception&) {  // NOLINT(bugprone-empty-catch): the line is lost
    }
}

void log_dropped(std::string_view client, std::string_view why) noexcept {
    try {
        std::string message = "connection from ";
        message += client;
        message += " dropped: ";
        message += why;
        log_error(message);
    } catch (const std::exception&) {  // NOLINT(bugprone-empty-catch): the line is lost
    }
}

}  // namespace lab
