// Unit tests of the extension → Content-Type table.
#include "lab/mime.hpp"

#include <gtest/gtest.h>

#include <ostream>
#include <string_view>

namespace {

struct MimeCase {
    std::string_view path;
    std::string_view type;
};

void PrintTo(const MimeCase& c, std::ostream* os) {
    *os << c.path << " -> " << c.type;
}

class MimeType : public testing::TestWithParam<MimeCase> {};

TEST_P(MimeType, ByLastExtension) {
    EXPECT_EQ(lab::mime_type_for(GetParam().path), GetParam().type);
}

constexpr std::string_view kOctet = "application/octet-stream";

INSTANTIATE_TEST_SUITE_P(Text, MimeType,
                         testing::Values(MimeCase{"index.html", "text/html; charset=utf-8"},
                                         MimeCase{"/a/page.htm", "text/html; charset=utf-8"},
                                         MimeCase{"style.css", "text/css; charset=utf-8"},
                                         MimeCase{"app.js", "text/javascript; charset=utf-8"},
                                         MimeCase{"mod.mjs", "text/javascript; charset=utf-8"},
                                         MimeCase{"data.json", "application/json"},
                                         MimeCase{"notes.txt", "text/plain; charset=utf-8"},
                                         MimeCase{"feed.xml", "application/xml"},
                                         MimeCase{"table.csv", "text/csv; charset=utf-8"},
                                         MimeCase{"README.md", "text/markdown; charset=utf-8"}));

INSTANTIATE_TEST_SUITE_P(
    Images, MimeType,
    testing::Values(MimeCase{"a.png", "image/png"}, MimeCase{"a.jpg", "image/jpeg"},
                    MimeCase{"a.jpeg", "image/jpeg"}, MimeCase{"a.gif", "image/gif"},
                    MimeCase{"a.svg", "image/svg+xml"}, MimeCase{"a.webp", "image/webp"},
                    MimeCase{"favicon.ico", "image/x-icon"}, MimeCase{"a.bmp", "image/bmp"}));

INSTANTIATE_TEST_SUITE_P(
    Binary, MimeType,
    testing::Values(MimeCase{"doc.pdf", "application/pdf"}, MimeCase{"a.zip", "application/zip"},
                    MimeCase{"a.gz", "application/gzip"}, MimeCase{"a.tar", "application/x-tar"},
                    MimeCase{"m.wasm", "application/wasm"}, MimeCase{"song.mp3", "audio/mpeg"},
                    MimeCase{"clip.mp4", "video/mp4"}, MimeCase{"clip.webm", "video/webm"},
                    MimeCase{"f.woff", "font/woff"}, MimeCase{"f.woff2", "font/woff2"},
                    MimeCase{"f.ttf", "font/ttf"}));

INSTANTIATE_TEST_SUITE_P(CaseAndShape, MimeType,
                         testing::Values(MimeCase{"INDEX.HTML", "text/html; charset=utf-8"},
                                         MimeCase{"Photo.JpG", "image/jpeg"},
                                         MimeCase{"/www/STYLE.Css", "text/css; charset=utf-8"},
                                         MimeCase{"a.tar.gz", "application/gzip"},
                                         MimeCase{"page.txt.html", "text/html; charset=utf-8"},
                                         MimeCase{"archive.html.zip", "application/zip"}));

INSTANTIATE_TEST_SUITE_P(
    Unknown, MimeType,
    testing::Values(MimeCase{"", kOctet}, MimeCase{"Makefile", kOctet},
                    MimeCase{"/a/b/noext", kOctet}, MimeCase{"file.unknownext", kOctet},
                    MimeCase{"file.exe", kOctet}, MimeCase{".bashrc", kOctet},
                    MimeCase{"/dir/.profile", kOctet}, MimeCase{"trailingdot.", kOctet},
                    MimeCase{"/a.b/c", kOctet}, MimeCase{"/site.html/data", kOctet},
                    MimeCase{"a.htmlx", kOctet}, MimeCase{"html", kOctet}));

}  // namespace
