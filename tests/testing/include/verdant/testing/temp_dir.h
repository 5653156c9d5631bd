// verdant/testing/temp_dir.h
//
// TempDir: a fresh directory under $TMPDIR removed (recursively) when the
// object goes out of scope.
//   TempDir dir;  WriteFile(dir.path() / "a.csv", "x\n");
// Thread-safety: not thread-safe.
#pragma once

#include <filesystem>
#include <string>

namespace verdant::testing {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

void WriteFile(const std::filesystem::path& p, const std::string& content);
std::string ReadFile(const std::filesystem::path& p);
// The seed for randomised tests: $VERDANT_TEST_SEED if set, else `fallback`.
// Printed by the caller so a failure can be replayed.
uint64_t TestSeed(uint64_t fallback);

}  // namespace verdant::testing
