#include "lab/resolve.hpp"

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <memory>
#include <vector>

#include <sys/stat.h>

namespace lab {

namespace {

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

NormalizedPath reject(std::string reason) {
    NormalizedPath result;
    result.status = 400;
    result.reason = std::move(reason);
    return result;
}

// Decodes %XX escapes once; nullopt-like failure is reported through `error`.
bool percent_decode(std::string_view in, std::string& out, std::string& error) {
    out.clear();
    out.reserve(in.size());
    for (std::size_t i = 0; i < in.size(); ++i) {
        char c = in[i];
        if (c == '%') {
            const int hi = i + 2 < in.size() ? hex_value(in[i + 1]) : -1;
            const int lo = i + 2 < in.size() ? hex_value(in[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                error = "The path has a malformed percent escape.";
                return false;
            }
            c = static_cast<char>(hi * 16 + lo);
            i += 2;
        }
        if (c == '\0') {
            error = "The path contains a NUL byte.";
            return false;
        }
        out.push_back(c);
    }
    return true;
}

// realpath() into a std::string, or an errno.
int canonical(const std::filesystem::path& path, std::filesystem::path& out) {
    std::unique_ptr<char, decltype(&std::free)> resolved(realpath(path.c_str(), nullptr),
                                                         &std::free);
    if (!resolved) return errno;
    out = resolved.get();
    return 0;
}

Resolution failure(int status, std::string reason) {
    Resolution result;
    result.status = status;
    result.reason = std::move(reason);
    return result;
}

std::string errno_reason(int status) {
    switch (status) {
        case 404:
            return "The requested file does not exist.";
        case 403:
            return "The requested file may not be read.";
        default:
            return "The file could not be opened.";
    }
}

// Checks that `path` (which must exist) is a readable regular file inside `root`.
Resolution check_file(const std::filesystem::path& root, const std::filesystem::path& path) {
    std::filesystem::path real;
    if (const int err = canonical(path, real)) {
        const int status = status_from_errno(err);
        return failure(status, errno_reason(status));
    }
    if (!is_inside(root, real)) return failure(403, "The path leads outside the document root.");
    struct stat st {};
    if (::stat(real.c_str(), &st) != 0) {
        const int status = status_from_errno(errno);
        return failure(status, errno_reason(status));
    }
    if (!S_ISREG(st.st_mode)) return failure(403, "Only regular files are served.");
    Resolution result;
    result.file = std::move(real);
    return result;
}

}  // namespace

NormalizedPath normalize_target(std::string_view target) {
    const std::string_view raw = target.substr(0, target.find_first_of("?#"));
    if (raw.empty() || raw.front() != '/') return reject("The path must start with '/'.");
    std::string decoded;
    std::string error;
    if (!percent_decode(raw, decoded, error)) return reject(error);

    std::vector<std::string_view> segments;
    std::string_view last;
    std::string_view rest = decoded;
    while (!rest.empty()) {
        const std::size_t slash = rest.find('/');
        const std::string_view segment = rest.substr(0, slash);
        rest = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
        last = segment;
        if (segment.empty() || segment == ".") continue;
        if (segment == "..") {
            // Climbing above the root is an attack or a bug; refuse instead of clamping.
            if (segments.empty()) return reject("The path climbs above the document root.");
            segments.pop_back();
            continue;
        }
        segments.push_back(segment);
    }
    NormalizedPath result;
    result.trailing_slash = decoded.back() == '/' || last == "." || last == "..";
    for (const auto segment : segments) {
        result.path += '/';
        result.path += segment;
    }
    if (result.path.empty()) result.path.push_back('/');  // the root itself
    return result;
}

Resolution resolve_target(const std::filesystem::path& root, std::string_view target) {
    const NormalizedPath clean = normalize_target(target);
    if (clean.status != 200) return failure(clean.status, clean.reason);
    const std::filesystem::path path = root / std::string_view(clean.path).substr(1);

    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        const int status = status_from_errno(errno);
        return failure(status, errno_reason(status));
    }
    if (!S_ISDIR(st.st_mode)) {
        // `file.txt/` names a directory that is not there, as open() would say (ENOTDIR).
        if (clean.trailing_slash) return failure(404, errno_reason(404));
        return check_file(root, path);
    }
    if (!clean.trailing_slash) {
        Resolution redirect;
        redirect.status = 301;
        // clean.path has no empty segments, so the Location cannot start with `//`.
        redirect.location = encode_path(clean.path) + "/";
        return redirect;
    }
    Resolution index = check_file(root, path / "index.html");
    if (index.status == 404) return failure(403, "The directory has no index.html.");
    return index;
}

int status_from_errno(int err) noexcept {
    switch (err) {
        case ENOENT:
        case ENOTDIR:
        case ENAMETOOLONG:
        case ELOOP:
            return 404;
        case EACCES:
        case EPERM:
            return 403;
        default:
            return 500;
    }
}

bool is_inside(const std::filesystem::path& root, const std::filesystem::path& path) {
    const std::string& r = root.native();
    const std::string& p = path.native();
    if (r == "/") return !p.empty() && p.front() == '/';
    // Compare with the separator so that /srv/www2 is not taken to be inside /srv/www.
    return p == r || (p.size() > r.size() && p.compare(0, r.size(), r) == 0 && p[r.size()] == '/');
}

std::string encode_path(std::string_view path) {
    static constexpr std::string_view kSafe = "-._~!$&'()*+,;=:@/";
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(path.size());
    for (const char ch : path) {
        const auto c = static_cast<unsigned char>(ch);
        const bool alnum = (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
        if (alnum || kSafe.find(ch) != std::string_view::npos) {
            out.push_back(ch);
        } else {
            out.push_back('%');
            out.push_back(kHex[c >> 4]);
            out.push_back(kHex[c & 15]);
        }
    }
    return out;
}

}  // namespace lab
