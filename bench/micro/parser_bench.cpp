/// @file parser_bench.cpp
/// @brief Nanoseconds per call of the core's pure functions: parse_request, normalize_target
/// and resolve_target.
///
/// These are the per-request costs a server pays before it touches the file it serves. They
/// tell whether the parser could ever be what limits requests per second: at ~10 000 req/s a
/// request has 100 µs, so a parser in the hundreds of nanoseconds is not the bottleneck.
///
/// Run: `build/bin/parser_bench` (or `build/bench-micro/bin/parser_bench`);
/// `--benchmark_format=json` for machines.

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>

#include <unistd.h>

#include "lab/request.hpp"
#include "lab/resolve.hpp"

namespace {

/// What `curl http://localhost:8080/index.html` sends: a request line and three headers.
constexpr std::string_view kCurlRequest =
    "GET /index.html HTTP/1.1\r\n"
    "Host: localhost:8080\r\n"
    "User-Agent: curl/7.88.1\r\n"
    "Accept: */*\r\n"
    "\r\n";

/// What Chrome sends for a page: a dozen headers, about 700 bytes.
constexpr std::string_view kChromeRequest =
    "GET /docs/guide/index.html?lang=en HTTP/1.1\r\n"
    "Host: localhost:8080\r\n"
    "Connection: keep-alive\r\n"
    "sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n"
    "sec-ch-ua-mobile: ?0\r\n"
    "sec-ch-ua-platform: \"Linux\"\r\n"
    "Upgrade-Insecure-Requests: 1\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36\r\n"
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7\r\n"
    "Sec-Fetch-Site: none\r\n"
    "Sec-Fetch-Mode: navigate\r\n"
    "Sec-Fetch-User: ?1\r\n"
    "Sec-Fetch-Dest: document\r\n"
    "Accept-Encoding: gzip, deflate, br, zstd\r\n"
    "Accept-Language: en-US,en;q=0.9,fr;q=0.8\r\n"
    "If-Modified-Since: Tue, 15 Nov 1994 08:12:31 GMT\r\n"
    "\r\n";

// Parses one whole request head per iteration; fails the run if the parser rejects it.
void parse(benchmark::State& state, std::string_view bytes) {
    for (auto _ : state) {
        lab::ParseResult result = lab::parse_request(bytes);
        benchmark::DoNotOptimize(result);
        if (result.state != lab::ParseState::done) {
            state.SkipWithError("parse_request did not accept the request");
            break;
        }
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                            static_cast<std::int64_t>(bytes.size()));
}

void BM_ParseRequest_Curl(benchmark::State& state) { parse(state, kCurlRequest); }
BENCHMARK(BM_ParseRequest_Curl);

void BM_ParseRequest_Chrome(benchmark::State& state) { parse(state, kChromeRequest); }
BENCHMARK(BM_ParseRequest_Chrome);

// normalize_target alone: decoding and the segment walk, no file system.
void normalize(benchmark::State& state, std::string_view target, int expected_status) {
    for (auto _ : state) {
        lab::NormalizedPath result = lab::normalize_target(target);
        benchmark::DoNotOptimize(result);
        if (result.status != expected_status) {
            state.SkipWithError("normalize_target gave an unexpected status");
            break;
        }
    }
}

void BM_NormalizeTarget_Simple(benchmark::State& state) {
    normalize(state, "/index.html", 200);
}
BENCHMARK(BM_NormalizeTarget_Simple);

void BM_NormalizeTarget_Encoded(benchmark::State& state) {
    normalize(state, "/docs/./guide/../my%20notes/caf%C3%A9.html?x=1", 200);
}
BENCHMARK(BM_NormalizeTarget_Encoded);

void BM_NormalizeTarget_Traversal(benchmark::State& state) {
    normalize(state, "/a/../../etc/passwd", 400);
}
BENCHMARK(BM_NormalizeTarget_Traversal);

/// A throw-away document root: index.html, sub/index.html and sub/page.html.
class TempRoot {
  public:
    TempRoot() {
        std::string pattern =
            (std::filesystem::temp_directory_path() / "parser_bench.XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr) std::abort();
        root_ = std::filesystem::canonical(pattern);
        std::filesystem::create_directory(root_ / "sub");
        for (const char* name : {"index.html", "sub/index.html", "sub/page.html"}) {
            std::ofstream(root_ / name) << "<p>benchmark</p>\n";
        }
    }
    TempRoot(const TempRoot&) = delete;
    TempRoot& operator=(const TempRoot&) = delete;
    ~TempRoot() {
        std::error_code ignored;
        std::filesystem::remove_all(root_, ignored);
    }
    [[nodiscard]] const std::filesystem::path& path() const { return root_; }

  private:
    std::filesystem::path root_;
};

// resolve_target against a real directory: normalize, openat2 beneath the root, fstat.
// The file system calls hit the kernel's dentry cache, so this is the warm-cache cost.
void resolve(benchmark::State& state, std::string_view target, int expected_status) {
    const TempRoot temp;
    const lab::DocumentRoot root(temp.path());
    for (auto _ : state) {
        lab::Resolution result = lab::resolve_target(root, target);
        benchmark::DoNotOptimize(result);
        if (result.status != expected_status) {
            state.SkipWithError("resolve_target gave an unexpected status");
            break;
        }
    }
}

void BM_ResolveTarget_File(benchmark::State& state) { resolve(state, "/sub/page.html", 200); }
BENCHMARK(BM_ResolveTarget_File);

void BM_ResolveTarget_DirectoryIndex(benchmark::State& state) {
    resolve(state, "/sub/", 200);
}
BENCHMARK(BM_ResolveTarget_DirectoryIndex);

void BM_ResolveTarget_Missing(benchmark::State& state) {
    resolve(state, "/sub/missing.html", 404);
}
BENCHMARK(BM_ResolveTarget_Missing);

}  // namespace

BENCHMARK_MAIN();
