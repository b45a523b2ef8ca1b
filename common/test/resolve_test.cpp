// Unit tests of target normalisation and resolution against a scratch document root.
#include "lab/resolve.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>
#include <thread>

#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using lab::normalize_target;
using lab::resolve_target;
using lab::test::TempDir;
using lab::test::upper_percent_hex;
using lab::test::visible;
using namespace std::string_view_literals;

// ---------------------------------------------------------------------------------------------
// normalize_target: valid targets

/// Whether a case checks trailing_slash.
enum class Slash { no, yes, any };

struct NormalCase {
    std::string_view target;
    std::string_view path;
    Slash trailing;
};

void PrintTo(const NormalCase& c, std::ostream* os) {
    *os << visible(c.target) << " -> " << visible(c.path);
}

class NormalizeValid : public testing::TestWithParam<NormalCase> {};

TEST_P(NormalizeValid, GivesCleanPath) {
    const auto& param = GetParam();
    const auto result = normalize_target(param.target);
    ASSERT_EQ(result.status, 200) << result.reason;
    EXPECT_EQ(result.path, param.path);
    if (param.trailing != Slash::any) {
        EXPECT_EQ(result.trailing_slash, param.trailing == Slash::yes);
    }
}

INSTANTIATE_TEST_SUITE_P(
    Resolve, NormalizeValid,
    testing::Values(
        NormalCase{"/", "/", Slash::any}, NormalCase{"/index.html", "/index.html", Slash::no},
        NormalCase{"/a/b/c.txt", "/a/b/c.txt", Slash::no},
        NormalCase{"/a/./b/../c", "/a/c", Slash::no}, NormalCase{"//a//b", "/a/b", Slash::no},
        NormalCase{"/a/b/../../c", "/c", Slash::no}, NormalCase{"/dir/", "/dir", Slash::yes},
        NormalCase{"/dir", "/dir", Slash::no}, NormalCase{"/a/b//", "/a/b", Slash::yes},
        NormalCase{"/a.txt?x=1", "/a.txt", Slash::no},
        NormalCase{"/a.txt#frag", "/a.txt", Slash::no},
        NormalCase{"/a.txt?x=1#frag", "/a.txt", Slash::no},
        NormalCase{"/dir/?x=1", "/dir", Slash::yes},
        NormalCase{"/a.txt?bad=%zz&nul=%00", "/a.txt", Slash::no},
        NormalCase{"/a.txt?../../etc/passwd", "/a.txt", Slash::no},
        NormalCase{"/a%20b.txt", "/a b.txt", Slash::no}, NormalCase{"/%41%42c", "/ABc", Slash::no},
        NormalCase{"/%7e%7E", "/~~", Slash::no}, NormalCase{"/a%3fb", "/a?b", Slash::no},
        NormalCase{"/a%23b", "/a#b", Slash::no}, NormalCase{"/a%2fb", "/a/b", Slash::no},
        NormalCase{"/a%2Fb%2F", "/a/b", Slash::yes},
        NormalCase{"/%252e%252e", "/%2e%2e", Slash::no},
        NormalCase{"/%252e%252e/x", "/%2e%2e/x", Slash::no},
        NormalCase{"/%2541", "/%41", Slash::no}, NormalCase{"/a..b", "/a..b", Slash::no},
        NormalCase{"/..a", "/..a", Slash::no}, NormalCase{"/a..", "/a..", Slash::no},
        NormalCase{"/...", "/...", Slash::no}, NormalCase{"/.hidden", "/.hidden", Slash::no},
        NormalCase{"/..\\..\\x", "/..\\..\\x", Slash::no},
        NormalCase{"/a\\..\\b", "/a\\..\\b", Slash::no},
        NormalCase{"/caf%C3%A9", "/caf\xc3\xa9", Slash::no},
        NormalCase{"/a/%2e/b", "/a/b", Slash::no}, NormalCase{"/a/%2e%2e/b", "/b", Slash::no}));

// ---------------------------------------------------------------------------------------------
// normalize_target: rejected targets

struct InvalidCase {
    std::string_view target;
    std::string_view why;
};

void PrintTo(const InvalidCase& c, std::ostream* os) {
    *os << c.why << ": " << visible(c.target);
}

class NormalizeInvalid : public testing::TestWithParam<InvalidCase> {};

TEST_P(NormalizeInvalid, Is400) {
    const auto result = normalize_target(GetParam().target);
    EXPECT_EQ(result.status, 400) << "path: " << visible(result.path);
    EXPECT_FALSE(result.reason.empty());
}

INSTANTIATE_TEST_SUITE_P(
    BadEscape, NormalizeInvalid,
    testing::Values(InvalidCase{"/%", "lone percent"}, InvalidCase{"/a%", "percent at end"},
                    InvalidCase{"/%4", "one hex digit"}, InvalidCase{"/%4/x", "one hex digit"},
                    InvalidCase{"/%zz", "not hex"}, InvalidCase{"/%g0", "not hex"},
                    InvalidCase{"/%0g", "second not hex"}, InvalidCase{"/%00", "NUL"},
                    InvalidCase{"/a%00b", "NUL inside"}, InvalidCase{"/a.txt%00.html", "NUL"}));

INSTANTIATE_TEST_SUITE_P(
    ClimbAboveRoot, NormalizeInvalid,
    testing::Values(InvalidCase{"/..", "dot-dot"}, InvalidCase{"/../", "dot-dot slash"},
                    InvalidCase{"/../x", "dot-dot then file"},
                    InvalidCase{"/../../../../etc/passwd", "many dot-dots"},
                    InvalidCase{"/%2e%2e", "encoded"}, InvalidCase{"/%2e%2e/", "encoded"},
                    InvalidCase{"/%2E%2e/x", "mixed case encoded"},
                    InvalidCase{"/.%2e/", "half encoded"}, InvalidCase{"/%2e./", "half encoded"},
                    InvalidCase{"/..%2f..%2fetc/passwd", "encoded slash"},
                    InvalidCase{"/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "fully encoded"},
                    InvalidCase{"/./../", "dot then dot-dot"},
                    InvalidCase{"/a/../../b", "climbs back out"},
                    InvalidCase{"/a/b/../../../c", "climbs back out deeper"},
                    InvalidCase{"//../x", "double slash then dot-dot"},
                    InvalidCase{"/a/%2e%2e/%2e%2e/x", "encoded climb out"},
                    InvalidCase{"/..?x=1", "dot-dot before query"},
                    InvalidCase{"/..#top", "dot-dot before fragment"}));

// ---------------------------------------------------------------------------------------------
// resolve_target against a real tree

// Layout (base is a scratch dir; root is base/www, a sibling base/www2 lies outside):
//   www/index.html  www/a.txt  www/dir/index.html  www/empty/  www/sub/b.txt
//   www/a b/  www/link_in -> a.txt  www/link_out -> ../www2/secret.txt
//   www/link_dir_out -> ../www2  www/dangling -> nowhere  www/fifo
//   www/abs_in -> <absolute path of www/a.txt>  www/link_sub -> sub
//   www2/secret.txt
class ResolveTarget : public testing::Test {
  protected:
    static void SetUpTestSuite() {
        base_ = std::make_unique<TempDir>("lab-resolve");
        const auto& b = *base_;
        b.write("www/index.html", "<h1>home</h1>");
        b.write("www/a.txt", "hello");
        b.write("www/dir/index.html", "<h1>dir</h1>");
        b.mkdir("www/empty");
        b.write("www/sub/b.txt", "bee");
        b.mkdir("www/a b");
        b.write("www2/secret.txt", "secret");
        const auto www = b.path() / "www";
        fs::create_symlink("a.txt", www / "link_in");
        fs::create_symlink("../www2/secret.txt", www / "link_out");
        fs::create_directory_symlink("../www2", www / "link_dir_out");
        fs::create_symlink("nowhere", www / "dangling");
        fs::create_symlink(www / "a.txt", www / "abs_in");
        fs::create_directory_symlink("sub", www / "link_sub");
        ASSERT_EQ(::mkfifo((www / "fifo").c_str(), 0644), 0);
        root_ = std::make_unique<lab::DocumentRoot>(fs::canonical(www));
    }
    static void TearDownTestSuite() {
        root_.reset();
        base_.reset();
    }

    static lab::Resolution resolve(std::string_view target) {
        return resolve_target(*root_, target);
    }

    static inline std::unique_ptr<TempDir> base_;
    static inline std::unique_ptr<lab::DocumentRoot> root_;
};

// What the opened descriptor of a 200 holds (the start of it).
std::string content(const lab::Resolution& result) {
    std::string bytes(64, '\0');
    const auto n = ::pread(result.file.get(), bytes.data(), bytes.size(), 0);
    bytes.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return bytes;
}

TEST_F(ResolveTarget, ExistingFileIs200WithItsOpenDescriptor) {
    const auto result = resolve("/a.txt");
    ASSERT_EQ(result.status, 200) << result.reason;
    ASSERT_TRUE(result.file.valid());
    EXPECT_EQ(content(result), "hello");
    EXPECT_EQ(result.size, 5U);
    EXPECT_EQ(result.name, "/a.txt");
}

TEST_F(ResolveTarget, NestedFileWithQueryIs200) {
    const auto result = resolve("/sub/b.txt?q=1");
    ASSERT_EQ(result.status, 200) << result.reason;
    EXPECT_EQ(content(result), "bee");
    EXPECT_EQ(result.name, "/sub/b.txt");
}

TEST_F(ResolveTarget, DotSegmentsInsideRootAreFine) {
    const auto result = resolve("/sub/../sub/./b.txt");
    ASSERT_EQ(result.status, 200) << result.reason;
    EXPECT_EQ(content(result), "bee");
}

TEST_F(ResolveTarget, MissingFileIs404) {
    EXPECT_EQ(resolve("/missing.txt").status, 404);
    EXPECT_EQ(resolve("/sub/missing/deeper.txt").status, 404);
}

TEST_F(ResolveTarget, RootWithSlashServesIndex) {
    const auto result = resolve("/");
    ASSERT_EQ(result.status, 200) << result.reason;
    EXPECT_EQ(content(result), "<h1>home</h1>");
    EXPECT_EQ(result.name, "/index.html");
}

TEST_F(ResolveTarget, DirectoryWithSlashServesIndex) {
    const auto result = resolve("/dir/");
    ASSERT_EQ(result.status, 200) << result.reason;
    EXPECT_EQ(content(result), "<h1>dir</h1>");
    EXPECT_EQ(result.name, "/dir/index.html");
}

TEST_F(ResolveTarget, DirectoryWithoutIndexIs403) {
    const auto result = resolve("/empty/");
    EXPECT_EQ(result.status, 403);
    EXPECT_FALSE(result.file.valid());
}

TEST_F(ResolveTarget, DirectoryWithoutSlashRedirects) {
    const auto result = resolve("/dir");
    ASSERT_EQ(result.status, 301) << result.reason;
    EXPECT_EQ(result.location, "/dir/");
}

TEST_F(ResolveTarget, EmptyDirectoryWithoutSlashAlsoRedirects) {
    const auto result = resolve("/empty");
    ASSERT_EQ(result.status, 301) << result.reason;
    EXPECT_EQ(result.location, "/empty/");
}

TEST_F(ResolveTarget, RedirectLocationNeverStartsWithDoubleSlash) {
    for (const auto target : {"//dir"sv, "///dir"sv, "//sub"sv, "/./dir"sv}) {
        SCOPED_TRACE(target);
        const auto result = resolve(target);
        ASSERT_EQ(result.status, 301) << result.reason;
        ASSERT_FALSE(result.location.empty());
        EXPECT_EQ(result.location.front(), '/');
        EXPECT_NE(result.location.substr(0, 2), "//");
        EXPECT_EQ(result.location.back(), '/');
    }
    EXPECT_EQ(resolve("//dir").location, "/dir/");
}

TEST_F(ResolveTarget, RedirectLocationIsPercentEncoded) {
    const auto result = resolve("/a%20b");
    ASSERT_EQ(result.status, 301) << result.reason;
    EXPECT_EQ(upper_percent_hex(result.location), "/a%20b/");
}

TEST_F(ResolveTarget, RelativeSymlinkInsideRootIsServed) {
    const auto result = resolve("/link_in");
    ASSERT_EQ(result.status, 200) << result.reason;
    EXPECT_EQ(content(result), "hello");
    const auto through_dir = resolve("/link_sub/b.txt");
    ASSERT_EQ(through_dir.status, 200) << through_dir.reason;
    EXPECT_EQ(content(through_dir), "bee");
}

TEST_F(ResolveTarget, AbsoluteSymlinkIsRefusedEvenPointingInside) {
    // RESOLVE_BENEATH refuses every absolute symlink: the root may move, an absolute target
    // would not move with it.
    const auto result = resolve("/abs_in");
    EXPECT_EQ(result.status, 404) << result.reason;
    EXPECT_FALSE(result.file.valid());
}

TEST_F(ResolveTarget, SymlinkLeadingOutOfRootIs404) {
    // www2 shares www's name as a prefix: a plain string-prefix check would let it through.
    for (const auto target :
         {"/link_out"sv, "/link_dir_out/secret.txt"sv, "/link_dir_out/"sv, "/link_dir_out"sv}) {
        SCOPED_TRACE(target);
        const auto result = resolve(target);
        EXPECT_EQ(result.status, 404) << result.reason;
        EXPECT_FALSE(result.file.valid());
    }
}

TEST_F(ResolveTarget, OutsideTheRootReadsLikeMissing) {
    // No existence oracle: an outside file that exists and one that does not get the same
    // status and the same words as a file missing inside the root.
    const auto missing_inside = resolve("/no-such-file");
    for (const auto target : {"/link_dir_out/secret.txt"sv, "/link_dir_out/no-such-file"sv,
                              "/link_out"sv, "/dangling"sv}) {
        SCOPED_TRACE(target);
        const auto result = resolve(target);
        EXPECT_EQ(result.status, missing_inside.status);
        EXPECT_EQ(result.reason, missing_inside.reason);
    }
}

TEST_F(ResolveTarget, DanglingSymlinkIs404) {
    EXPECT_EQ(resolve("/dangling").status, 404);
}

TEST_F(ResolveTarget, FifoIsNotServedAndDoesNotBlock) {
    // No writer holds the FIFO open: a blocking open() would wait here forever.
    const auto result = resolve("/fifo");
    EXPECT_EQ(result.status, 403);
    EXPECT_FALSE(result.file.valid());
}

TEST_F(ResolveTarget, SwappingInASymlinkNeverServesWhatItPointsTo) {
    // An attacker who can write into the root swaps a file and a symlink to an outside file
    // with RENAME_EXCHANGE while requests come in: every answer must be the inside file or
    // a 404, never the secret. The check and the served descriptor are one and the same.
    const TempDir scratch("lab-swap");
    const auto www = scratch.mkdir("www");
    scratch.write("www/x", "inside");
    scratch.write("outside.txt", "secret");
    fs::create_symlink("../outside.txt", www / "y");
    const lab::DocumentRoot root(www);
    std::atomic<bool> stop{false};
    std::thread swapper([&] {
        while (!stop.load()) {
            ::syscall(SYS_renameat2, AT_FDCWD, (www / "x").c_str(), AT_FDCWD, (www / "y").c_str(),
                      RENAME_EXCHANGE);
        }
    });
    int served = 0;
    int leaked = 0;
    for (int i = 0; i < 20000; ++i) {
        const auto result = resolve_target(root, "/x");
        if (result.status != 200) continue;
        ++served;
        if (content(result) != "inside") ++leaked;
    }
    stop.store(true);
    swapper.join();
    EXPECT_EQ(leaked, 0);
    EXPECT_GT(served, 0);  // the race was really run: the inside file did come back
}

TEST_F(ResolveTarget, PathThroughAFileIs404) {
    EXPECT_EQ(resolve("/a.txt/x").status, 404);
    EXPECT_EQ(resolve("/sub/b.txt/index.html").status, 404);
}

TEST_F(ResolveTarget, FileWithTrailingSlashIs404) {
    // `a.txt/` names a directory that does not exist (open() says ENOTDIR), as in nginx.
    const auto result = resolve("/a.txt/");
    EXPECT_EQ(result.status, 404);
}

TEST_F(ResolveTarget, OverlongNameIs404) {
    EXPECT_EQ(resolve("/" + std::string(300, 'n')).status, 404);
    EXPECT_EQ(resolve("/sub/" + std::string(1000, 'n') + "/x").status, 404);
}

TEST_F(ResolveTarget, ClimbingTargetsAre400) {
    for (const auto target : {"/../www2/secret.txt"sv, "/%2e%2e/www2/secret.txt"sv,
                              "/..%2fwww2%2fsecret.txt"sv, "/a/../../www2/secret.txt"sv}) {
        SCOPED_TRACE(target);
        EXPECT_EQ(resolve(target).status, 400);
    }
}

TEST_F(ResolveTarget, BackslashIsAnOrdinaryByte) {
    EXPECT_EQ(resolve("/..\\..\\x").status, 404);
}

TEST_F(ResolveTarget, DoubleEncodedDotsAreALiteralName) {
    EXPECT_EQ(resolve("/%252e%252e/www2/secret.txt").status, 404);
}

TEST_F(ResolveTarget, BadEscapeIs400) {
    EXPECT_EQ(resolve("/%zz").status, 400);
    EXPECT_EQ(resolve("/a.txt%00").status, 400);
}

// ---------------------------------------------------------------------------------------------
// Helpers

TEST(StatusFromErrno, FollowsTheNginxTable) {
    struct Case {
        int err;
        int status;
    };
    for (const Case c : {Case{ENOENT, 404}, Case{ENOTDIR, 404}, Case{ENAMETOOLONG, 404},
                         Case{ELOOP, 404}, Case{EXDEV, 404}, Case{EACCES, 403}, Case{ENXIO, 403},
                         Case{EMFILE, 503}, Case{ENOMEM, 503}, Case{EIO, 500}}) {
        EXPECT_EQ(lab::status_from_errno(c.err), c.status) << "errno " << c.err;
    }
}

TEST(IsInside, ComparesWholeSegments) {
    EXPECT_TRUE(lab::is_inside("/srv/www", "/srv/www"));
    EXPECT_TRUE(lab::is_inside("/srv/www", "/srv/www/a"));
    EXPECT_TRUE(lab::is_inside("/srv/www", "/srv/www/a/b/c.txt"));
    EXPECT_FALSE(lab::is_inside("/srv/www", "/srv/www2"));
    EXPECT_FALSE(lab::is_inside("/srv/www", "/srv/www2/a"));
    EXPECT_FALSE(lab::is_inside("/srv/www", "/srv/ww"));
    EXPECT_FALSE(lab::is_inside("/srv/www", "/srv"));
    EXPECT_FALSE(lab::is_inside("/srv/www", "/etc/passwd"));
}

TEST(IsInside, FileSystemRootContainsEverything) {
    EXPECT_TRUE(lab::is_inside("/", "/"));
    EXPECT_TRUE(lab::is_inside("/", "/etc/passwd"));
}

TEST(IsInside, RealDirectories) {
    const TempDir base("lab-inside");
    const auto www = base.mkdir("www");
    const auto www2 = base.mkdir("www2");
    const auto file = base.write("www/f.txt", "x");
    EXPECT_TRUE(lab::is_inside(www, file));
    EXPECT_TRUE(lab::is_inside(www, www));
    EXPECT_FALSE(lab::is_inside(www, www2));
    EXPECT_FALSE(lab::is_inside(www, base.path()));
}

struct EncodeCase {
    std::string_view raw;
    std::string_view encoded;  // hex digits upper-case
};

void PrintTo(const EncodeCase& c, std::ostream* os) {
    *os << visible(c.raw) << " -> " << c.encoded;
}

class EncodePath : public testing::TestWithParam<EncodeCase> {};

TEST_P(EncodePath, EncodesUnsafeBytes) {
    const auto& param = GetParam();
    EXPECT_EQ(upper_percent_hex(lab::encode_path(param.raw)), param.encoded);
}

TEST_P(EncodePath, DecodesBackToTheSamePath) {
    const auto& param = GetParam();
    const auto normal = normalize_target(lab::encode_path(param.raw));
    ASSERT_EQ(normal.status, 200) << normal.reason;
    EXPECT_EQ(normal.path, param.raw);
}

INSTANTIATE_TEST_SUITE_P(
    Resolve, EncodePath,
    testing::Values(EncodeCase{"/a/b.txt", "/a/b.txt"}, EncodeCase{"/AZaz09-._~", "/AZaz09-._~"},
                    EncodeCase{"/!$&'()*+,;=", "/!$&'()*+,;="}, EncodeCase{"/a b", "/a%20b"},
                    EncodeCase{"/100%", "/100%25"}, EncodeCase{"/a?b", "/a%3Fb"},
                    EncodeCase{"/a#b", "/a%23b"}, EncodeCase{"/caf\xc3\xa9", "/caf%C3%A9"},
                    EncodeCase{"/\xff", "/%FF"}, EncodeCase{"/%2e%2e", "/%252e%252e"},
                    EncodeCase{"/a\"b<c>", "/a%22b%3Cc%3E"}));

TEST(EncodePath, EncodesControlBytes) {
    const std::string encoded = lab::encode_path("/a\r\nb\tc\x7f"sv);
    for (const char ch : encoded) {
        const auto c = static_cast<unsigned char>(ch);
        EXPECT_TRUE(c > 0x20 && c < 0x7f) << "raw byte " << int{c} << " in " << visible(encoded);
    }
    EXPECT_EQ(upper_percent_hex(encoded), "/a%0D%0Ab%09c%7F");
}

}  // namespace
