#include "lab/resolve.hpp"

#include <cerrno>
#include <vector>

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lab/log.hpp"
#include "lab/options.hpp"

namespace lab {

namespace {

/// How often an open is retried when the kernel reports a rename racing with the look-up.
constexpr int kOpenRetries = 4;

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

Resolution failure(int status, std::string reason) {
    Resolution result;
    result.status = status;
    result.reason = std::move(reason);
    return result;
}

// One reason per status, so an answer never tells two causes behind the same status apart
// (a path that leaves the root reads exactly like a missing file).
std::string errno_reason(int status) {
    switch (status) {
        case 404:
            return "The requested file does not exist.";
        case 403:
            return "The requested file may not be read.";
        case 503:
            return "The server is short of resources. Try again shortly.";
        default:
            return "The file could not be opened.";
    }
}

Resolution failure_from_errno(int err) {
    const int status = status_from_errno(err);
    return failure(status, errno_reason(status));
}

// Opens `relative` beneath the root's descriptor without ever leaving it, and without
// blocking on a FIFO or device; -1 with errno set on failure.
int open_beneath(int root_fd, const std::string& relative) {
    open_how how{};
    how.flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    for (int attempt = 0;; ++attempt) {
        const long fd = ::syscall(SYS_openat2, root_fd, relative.c_str(), &how, sizeof how);
        if (fd >= 0) return static_cast<int>(fd);
        // EAGAIN: a rename somewhere raced with a `..` in a symlink; the kernel asks us to
        // retry rather than risk an escape. Past a few tries it reads as "not found".
        if (errno == EINTR || (errno == EAGAIN && attempt < kOpenRetries)) continue;
        if (errno == EAGAIN) errno = ENOENT;
        return -1;
    }
}

// What one open-and-fstat found.
struct Opened {
    Fd fd;
    struct stat info {};
    int error = 0;  // errno when fd is not valid
};

Opened open_and_stat(int root_fd, const std::string& relative) {
    Opened opened;
    opened.fd.reset(open_beneath(root_fd, relative));
    if (!opened.fd.valid() || ::fstat(opened.fd.get(), &opened.info) != 0) {
        opened.error = errno;
        opened.fd.reset();
    }
    return opened;
}

// Fills a 200 from an opened descriptor, which must be a regular file to be served.
Resolution serve_opened(Opened opened, std::string name) {
    if (!S_ISREG(opened.info.st_mode)) return failure(403, "Only regular files are served.");
    Resolution result;
    result.size = static_cast<std::uint64_t>(opened.info.st_size);
    result.mtime = opened.info.st_mtime;
    result.file = std::move(opened.fd);
    result.name = std::move(name);
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

DocumentRoot::DocumentRoot(const std::filesystem::path& path)
    : path_(path), fd_(::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC)) {
    if (!fd_.valid()) {
        throw StartupError(1,
                           "cannot open document root " + path.string() + ": " + errno_text(errno));
    }
    const Fd probe(open_beneath(fd_.get(), "."));
    if (!probe.valid() && errno == ENOSYS) {
        throw StartupError(1, "this kernel has no openat2(); Linux 5.6 or later is needed");
    }
}

Resolution resolve_target(const DocumentRoot& root, std::string_view target) {
    const NormalizedPath clean = normalize_target(target);
    if (clean.status != 200) return failure(clean.status, clean.reason);
    if (root.fd() < 0) return failure(500, "The server has no document root.");
    // clean.path starts with '/'; beneath the root it is relative ("." for the root).
    const std::string relative = clean.path == "/" ? "." : clean.path.substr(1);

    Opened opened = open_and_stat(root.fd(), relative);
    if (opened.error != 0) return failure_from_errno(opened.error);
    if (!S_ISDIR(opened.info.st_mode)) {
        // `file.txt/` names a directory that is not there, as open() would say (ENOTDIR).
        if (clean.trailing_slash) return failure_from_errno(ENOTDIR);
        return serve_opened(std::move(opened), clean.path);
    }
    if (!clean.trailing_slash) {
        Resolution redirect;
        redirect.status = 301;
        // clean.path has no empty segments, so the Location cannot start with `//`.
        redirect.location = encode_path(clean.path) + "/";
        return redirect;
    }
    // The index is looked up beneath the root too, from its start: whatever the directory
    // has become since, the result stays inside.
    const std::string index = clean.path == "/" ? "/index.html" : clean.path + "/index.html";
    Opened page = open_and_stat(root.fd(), index.substr(1));
    if (page.error == ENOENT) return failure(403, "The directory has no index.html.");
    if (page.error != 0) return failure_from_errno(page.error);
    return serve_opened(std::move(page), index);
}

int status_from_errno(int err) noexcept {
    switch (err) {
        case ENOENT:
        case ENOTDIR:
        case ENAMETOOLONG:
        case ELOOP:  // a symlink loop, or a magic link refused
        case EXDEV:  // the path would leave the root: answered as if it were not there
            return 404;
        case EACCES:
        case EPERM:
        case ENXIO:  // a socket or a device without a driver: not a file to serve
        case ENODEV:
            return 403;
        case EMFILE:
        case ENFILE:
        case ENOMEM:
            return 503;
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
