/// @file test_support.hpp
/// @brief Small helpers shared by the unit tests: a scratch directory and readable escapes.
#pragma once

#include <unistd.h>

#include <atomic>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>

namespace lab::test {

/// @brief A fresh, canonical directory under the system temp dir, removed with its contents.
class TempDir {
  public:
    /// @brief Creates a directory named after @p tag, the process id and a counter.
    explicit TempDir(std::string_view tag = "lab-test") {
        static std::atomic<unsigned> counter{0};
        const auto name = std::string(tag) + "-" + std::to_string(::getpid()) + "-" +
                          std::to_string(counter.fetch_add(1));
        path_ = std::filesystem::temp_directory_path() / name;
        std::filesystem::remove_all(path_);
        std::filesystem::create_directories(path_);
        path_ = std::filesystem::canonical(path_);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }

    /// @brief The canonical path of the directory.
    [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

    /// @brief Writes @p content to @p relative (creating parent directories); returns its path.
    std::filesystem::path write(const std::filesystem::path& relative,
                                std::string_view content) const {
        const auto file = path_ / relative;
        std::filesystem::create_directories(file.parent_path());
        std::ofstream out(file, std::ios::binary);
        out.write(content.data(), static_cast<std::streamsize>(content.size()));
        return file;
    }

    /// @brief Creates the directory @p relative (and its parents); returns its path.
    std::filesystem::path mkdir(const std::filesystem::path& relative) const {
        const auto dir = path_ / relative;
        std::filesystem::create_directories(dir);
        return dir;
    }

  private:
    std::filesystem::path path_;
};

/// @brief Shows control and non-ASCII bytes as `\xNN`, so failure messages stay readable.
inline std::string visible(std::string_view bytes) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    for (const char ch : bytes) {
        const auto c = static_cast<unsigned char>(ch);
        if (c >= 0x20 && c < 0x7f) {
            out += ch;
        } else {
            out += "\\x";
            out += kHex[c >> 4];
            out += kHex[c & 0xf];
        }
    }
    return out;
}

/// @brief Upper-cases the hex digits of every `%XX` escape (escapes may use either case).
inline std::string upper_percent_hex(std::string text) {
    for (std::size_t i = 0; i + 2 < text.size(); ++i) {
        if (text[i] != '%') continue;
        text[i + 1] = static_cast<char>(std::toupper(static_cast<unsigned char>(text[i + 1])));
        text[i + 2] = static_cast<char>(std::toupper(static_cast<unsigned char>(text[i + 2])));
        i += 2;
    }
    return text;
}

}  // namespace lab::test
