#include "lab/mime.hpp"

#include <array>
#include <utility>

#include "lab/request.hpp"

namespace lab {

namespace {

// Extension → Content-Type. A linear scan of ~35 entries costs less than hashing would.
constexpr std::array<std::pair<std::string_view, std::string_view>, 33> kTypes = {{
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"json", "application/json"},
    {"txt", "text/plain; charset=utf-8"},
    {"xml", "application/xml"},
    {"csv", "text/csv; charset=utf-8"},
    {"md", "text/markdown; charset=utf-8"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"svg", "image/svg+xml"},
    {"webp", "image/webp"},
    {"ico", "image/x-icon"},
    {"bmp", "image/bmp"},
    {"pdf", "application/pdf"},
    {"zip", "application/zip"},
    {"gz", "application/gzip"},
    {"tar", "application/x-tar"},
    {"wasm", "application/wasm"},
    {"mp3", "audio/mpeg"},
    {"mp4", "video/mp4"},
    {"webm", "video/webm"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"ttf", "font/ttf"},
    {"otf", "font/otf"},
    {"wav", "audio/wav"},
    {"ogg", "audio/ogg"},
    {"avif", "image/avif"},
}};

}  // namespace

std::string_view mime_type_for(std::string_view path) noexcept {
    const std::size_t slash = path.rfind('/');
    const std::string_view name = slash == std::string_view::npos ? path : path.substr(slash + 1);
    const std::size_t dot = name.rfind('.');
    // No dot, or a dot only at the start (`.bashrc`), means no extension.
    if (dot == std::string_view::npos || dot == 0) return "application/octet-stream";
    const std::string_view ext = name.substr(dot + 1);
    for (const auto& [known, type] : kTypes) {
        if (iequals(ext, known)) return type;
    }
    return "application/octet-stream";
}

}  // namespace lab
