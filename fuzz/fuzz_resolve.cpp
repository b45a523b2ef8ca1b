/// @file fuzz_resolve.cpp
/// @brief libFuzzer target: arbitrary targets resolved against a real temporary root.
///
/// The root holds a file, a directory with an index, a symlink that leads outside, and a
/// sibling directory whose name extends the root's (`root2`). Whatever the bytes, an
/// accepted target must come back as an open regular file inside the root (checked through
/// the descriptor's own path in /proc), never one of the secrets.

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "lab/resolve.hpp"

namespace fs = std::filesystem;

namespace {

fs::path g_base;
fs::path g_root;
lab::DocumentRoot* g_doc_root = nullptr;

// Removes the temporary tree when libFuzzer exits.
void remove_tree() {
    std::error_code ec;
    fs::remove_all(g_base, ec);
}

void check(bool ok, const char* what) {
    if (!ok) {
        __builtin_printf("invariant broken: %s\n", what);
        std::abort();
    }
}

void write_file(const fs::path& path, std::string_view text) {
    std::ofstream(path) << text;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    g_base = fs::temp_directory_path() / ("lab-fuzz-" + std::to_string(::getpid()));
    const fs::path& base = g_base;
    (void)std::atexit(remove_tree);
    fs::create_directories(base / "root" / "dir");
    fs::create_directories(base / "root2");
    write_file(base / "secret.txt", "secret beside the root");
    write_file(base / "root2" / "secret.txt", "secret in the sibling");
    write_file(base / "root" / "index.html", "<h1>index</h1>");
    write_file(base / "root" / "dir" / "index.html", "<h1>dir</h1>");
    write_file(base / "root" / "a b.txt", "spaced");
    std::error_code ec;
    fs::create_symlink("../secret.txt", base / "root" / "escape", ec);
    fs::create_symlink("../root2", base / "root" / "sibling", ec);
    fs::create_symlink("/etc", base / "root" / "etc", ec);
    fs::create_symlink("index.html", base / "root" / "inside", ec);
    g_root = fs::canonical(base / "root");
    g_doc_root = new lab::DocumentRoot(g_root);  // lives as long as the fuzzer
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string target(reinterpret_cast<const char*>(data), size);
    const lab::Resolution where = lab::resolve_target(*g_doc_root, target);
    if (where.status == 200) {
        check(where.file.valid(), "200 without an open file");
        // What the descriptor really is, whatever names led to it.
        const fs::path opened =
            fs::read_symlink("/proc/self/fd/" + std::to_string(where.file.get()));
        check(lab::is_inside(g_root, opened), "resolved outside the root");
        check(fs::is_regular_file(opened), "resolved to something not a regular file");
        check(opened.filename() != "secret.txt", "resolved to a secret");
    } else if (where.status == 301) {
        check(
            where.location.size() >= 2 && where.location.front() == '/' && where.location[1] != '/',
            "redirect that could leave the site");
    } else {
        check(!where.file.valid(), "an error that holds a file open");
        check(where.status == 400 || where.status == 403 || where.status == 404,
              "unexpected status");
    }
    return 0;
}
