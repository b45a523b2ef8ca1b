// Unit tests of command-line parsing for every stage.
#include "lab/options.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using lab::Options;
using lab::StageInfo;
using lab::StartupError;
using lab::test::TempDir;

constexpr StageInfo kPlain{"stageX", "summary", false};
constexpr StageInfo kLimited{"stageX", "summary", true};

// Owns mutable copies of the arguments, as getopt may permute argv.
class Argv {
  public:
    explicit Argv(const std::vector<std::string>& args) : storage_{"stageX"} {
        storage_.insert(storage_.end(), args.begin(), args.end());
        for (auto& arg : storage_) pointers_.push_back(arg.data());
        pointers_.push_back(nullptr);
    }
    [[nodiscard]] int argc() const { return static_cast<int>(storage_.size()); }
    [[nodiscard]] char** argv() { return pointers_.data(); }

  private:
    std::vector<std::string> storage_;
    std::vector<char*> pointers_;
};

Options parse(const std::vector<std::string>& args, const StageInfo& stage = kPlain) {
    Argv argv(args);
    return lab::parse_options(argv.argc(), argv.argv(), stage);
}

// The exit code parse() throws with, or -1 when it does not throw.
int exit_code_of(const std::vector<std::string>& args, const StageInfo& stage = kPlain) {
    try {
        (void)parse(args, stage);
    } catch (const StartupError& error) {
        return error.exit_code;
    }
    return -1;
}

class ParseOptions : public testing::Test {
  protected:
    TempDir dir_{"lab-options"};
};

TEST_F(ParseOptions, Defaults) {
    const Options options = parse({});
    EXPECT_EQ(options.port, 8080);
    EXPECT_EQ(options.bind, "127.0.0.1");
    EXPECT_EQ(options.timeout, std::chrono::seconds{10});
    EXPECT_FALSE(options.quiet);
    EXPECT_EQ(options.root, fs::canonical(fs::current_path()));
    EXPECT_EQ(options.max_per_client, lab::kDefaultMaxPerClient);
    EXPECT_EQ(options.max_total, lab::kDefaultMaxTotal);
    EXPECT_FALSE(options.status_page);
}

TEST_F(ParseOptions, PortAndRoot) {
    const Options options = parse({"-p", "8081", "-r", dir_.path().string()});
    EXPECT_EQ(options.port, 8081);
    EXPECT_EQ(options.root, dir_.path());
}

TEST_F(ParseOptions, RootIsCanonicalised) {
    dir_.mkdir("site/sub");
    const Options options = parse({"-r", (dir_.path() / "site" / "sub" / ".." / ".").string()});
    EXPECT_EQ(options.root, dir_.path() / "site");
    EXPECT_TRUE(options.root.is_absolute());
}

TEST_F(ParseOptions, PortZeroAndBounds) {
    EXPECT_EQ(parse({"-p", "0"}).port, 0);
    EXPECT_EQ(parse({"-p", "65535"}).port, 65535);
    EXPECT_EQ(parse({"-p", "1"}).port, 1);
}

TEST_F(ParseOptions, LongPortForms) {
    EXPECT_EQ(parse({"--port=9000"}).port, 9000);
    EXPECT_EQ(parse({"--port", "9001"}).port, 9001);
}

TEST_F(ParseOptions, TimeoutAndQuiet) {
    const Options options = parse({"-t", "3", "-q"});
    EXPECT_EQ(options.timeout, std::chrono::seconds{3});
    EXPECT_TRUE(options.quiet);
}

TEST_F(ParseOptions, SingleDashLimitOptions) {
    const Options options = parse({"-maxclient", "5", "-maxtotal", "7"}, kLimited);
    EXPECT_EQ(options.max_per_client, 5);
    EXPECT_EQ(options.max_total, 7);
}

TEST_F(ParseOptions, DoubleDashLimitOptions) {
    const Options options = parse({"--max-per-client", "5", "--max-total", "7"}, kLimited);
    EXPECT_EQ(options.max_per_client, 5);
    EXPECT_EQ(options.max_total, 7);
}

TEST_F(ParseOptions, LimitOptionsMixWithCommonOnes) {
    const Options options = parse(
        {"-p", "0", "-maxclient", "2", "-r", dir_.path().string(), "-maxtotal", "3", "--status"},
        kLimited);
    EXPECT_EQ(options.port, 0);
    EXPECT_EQ(options.root, dir_.path());
    EXPECT_EQ(options.max_per_client, 2);
    EXPECT_EQ(options.max_total, 3);
    EXPECT_TRUE(options.status_page);
}

TEST_F(ParseOptions, StatusFlag) {
    EXPECT_TRUE(parse({"--status"}, kLimited).status_page);
    EXPECT_FALSE(parse({}, kLimited).status_page);
}

TEST_F(ParseOptions, RepeatedCallsAreIndependent) {
    // getopt keeps global state; a second parse must not see the first one's position.
    EXPECT_EQ(parse({"-p", "1111"}).port, 1111);
    EXPECT_EQ(parse({"-p", "2222"}).port, 2222);
    EXPECT_EQ(exit_code_of({"-p", "bad"}), 2);
    EXPECT_EQ(parse({"-t", "4"}).timeout, std::chrono::seconds{4});
    EXPECT_EQ(parse({}).port, 8080);
}

TEST_F(ParseOptions, UsageErrorsExitWith2) {
    const std::string file = dir_.write("regular.txt", "x").string();
    const std::string missing = (dir_.path() / "does-not-exist").string();
    const std::vector<std::vector<std::string>> cases = {
        {"-p", "notaport"}, {"-p", "70000"}, {"-p", "65536"}, {"-p", "-1"},
        {"-p", ""},         {"-p", "80x"},   {"-p"},          {"-r", missing},
        {"-r", file},       {"-t", "0"},     {"-t", "abc"},   {"-t", "-1"},
        {"--bogus"},        {"-z"},          {"unexpected"},  {"-p", "8080", "extra"},
    };
    for (const auto& args : cases) {
        std::string shown;
        for (const auto& arg : args) shown += "[" + arg + "] ";
        Argv argv(args);
        try {
            (void)lab::parse_options(argv.argc(), argv.argv(), kPlain);
            ADD_FAILURE() << "accepted: " << shown;
        } catch (const StartupError& error) {
            EXPECT_EQ(error.exit_code, 2) << shown;
        }
    }
}

TEST_F(ParseOptions, LimitValueErrorsExitWith2) {
    EXPECT_EQ(exit_code_of({"-maxclient", "0"}, kLimited), 2);
    EXPECT_EQ(exit_code_of({"-maxtotal", "-3"}, kLimited), 2);
    EXPECT_EQ(exit_code_of({"-maxclient", "many"}, kLimited), 2);
    EXPECT_EQ(exit_code_of({"--max-total", "0"}, kLimited), 2);
}

TEST_F(ParseOptions, LimitOptionsUnknownWithoutLimits) {
    EXPECT_EQ(exit_code_of({"-maxclient", "12"}, kPlain), 2);
    EXPECT_EQ(exit_code_of({"-maxtotal", "60"}, kPlain), 2);
    EXPECT_EQ(exit_code_of({"--max-per-client", "12"}, kPlain), 2);
    EXPECT_EQ(exit_code_of({"--status"}, kPlain), 2);
}

TEST_F(ParseOptions, HelpAndVersionExitWith0) {
    EXPECT_EQ(exit_code_of({"-h"}), 0);
    EXPECT_EQ(exit_code_of({"--help"}), 0);
    EXPECT_EQ(exit_code_of({"--version"}), 0);
    EXPECT_EQ(exit_code_of({"--help"}, kLimited), 0);
}

}  // namespace
