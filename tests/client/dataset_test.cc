// IDX reading (plain and gzipped), error paths on damaged files, Subset.
#include "verdant/client/dataset.h"

#include <doctest/doctest.h>
#include <zlib.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "verdant/testing/temp_dir.h"

using namespace verdant;
using verdant::testing::TempDir;
using verdant::testing::WriteFile;
namespace fs = std::filesystem;

namespace {

void PutBe32(std::string& s, uint32_t v) {
  s.push_back(static_cast<char>(v >> 24));
  s.push_back(static_cast<char>(v >> 16));
  s.push_back(static_cast<char>(v >> 8));
  s.push_back(static_cast<char>(v));
}

// n images of rows x cols; pixel (i, k) = (i * 7 + k) % 256.
std::string ImagesIdx(uint32_t n, uint32_t rows, uint32_t cols) {
  std::string s("\x00\x00\x08\x03", 4);
  PutBe32(s, n);
  PutBe32(s, rows);
  PutBe32(s, cols);
  for (uint32_t i = 0; i < n; ++i) {
    for (uint32_t k = 0; k < rows * cols; ++k) s.push_back(static_cast<char>((i * 7 + k) % 256));
  }
  return s;
}

std::string LabelsIdx(const std::vector<uint8_t>& labels) {
  std::string s("\x00\x00\x08\x01", 4);
  PutBe32(s, static_cast<uint32_t>(labels.size()));
  for (uint8_t l : labels) s.push_back(static_cast<char>(l));
  return s;
}

void WriteGz(const fs::path& p, const std::string& content) {
  gzFile f = gzopen(p.string().c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, content.data(), static_cast<unsigned>(content.size())) ==
          static_cast<int>(content.size()));
  REQUIRE(gzclose(f) == Z_OK);
}

float Norm(uint8_t v) { return (v / 255.0f - kFashionMnistMean) / kFashionMnistStd; }

void WriteSplit(const fs::path& dir, const std::string& prefix, uint32_t n, bool gz) {
  std::vector<uint8_t> labels;
  for (uint32_t i = 0; i < n; ++i) labels.push_back(static_cast<uint8_t>(i % 10));
  const std::string img = ImagesIdx(n, 2, 3), lab = LabelsIdx(labels);
  if (gz) {
    WriteGz(dir / (prefix + "-images-idx3-ubyte.gz"), img);
    WriteGz(dir / (prefix + "-labels-idx1-ubyte.gz"), lab);
  } else {
    WriteFile(dir / (prefix + "-images-idx3-ubyte"), img);
    WriteFile(dir / (prefix + "-labels-idx1-ubyte"), lab);
  }
}

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("LoadFashionMnist reads plain IDX files and normalises pixels") {
  TempDir dir;
  WriteSplit(dir.path(), "train", 5, /*gz=*/false);
  auto ds = LoadFashionMnist(dir.path().string(), "train");
  REQUIRE_MESSAGE(ds.ok(), ds.status().ToString());
  CHECK(ds->size() == 5);
  CHECK(ds->rows == 2);
  CHECK(ds->cols == 3);
  REQUIRE(ds->images.size() == 5 * 6);
  CHECK(ds->labels[3] == 3);
  CHECK(ds->images[0] == doctest::Approx(Norm(0)));
  CHECK(ds->images[4 * 6 + 5] == doctest::Approx(Norm((4 * 7 + 5) % 256)));
}

TEST_CASE("LoadFashionMnist reads gzipped IDX files, and max_examples caps the read") {
  TempDir dir;
  WriteSplit(dir.path(), "t10k", 12, /*gz=*/true);
  auto all = LoadFashionMnist(dir.path().string(), "test");
  REQUIRE_MESSAGE(all.ok(), all.status().ToString());
  CHECK(all->size() == 12);
  CHECK(all->images[11 * 6 + 2] == doctest::Approx(Norm((11 * 7 + 2) % 256)));
  auto few = LoadFashionMnist(dir.path().string(), "t10k", 4);
  REQUIRE(few.ok());
  CHECK(few->size() == 4);
  CHECK(few->images.size() == 4 * 6);
  auto more = LoadFashionMnist(dir.path().string(), "test", 100);
  REQUIRE(more.ok());
  CHECK(more->size() == 12);
}

TEST_CASE("LoadFashionMnist reports missing files and bad splits") {
  TempDir dir;
  auto missing = LoadFashionMnist(dir.path().string(), "train");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == StatusCode::kNotFound);
  CHECK(Contains(missing.status().message(), "train-images-idx3-ubyte"));
  auto bad = LoadFashionMnist(dir.path().string(), "validation");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().code() == StatusCode::kInvalidArgument);
  CHECK(Contains(bad.status().message(), "validation"));
}

TEST_CASE("LoadFashionMnist returns kDataLoss naming the file for damaged files") {
  TempDir dir;
  const fs::path images = dir.path() / "train-images-idx3-ubyte";
  const fs::path labels = dir.path() / "train-labels-idx1-ubyte";
  const std::string good_images = ImagesIdx(4, 2, 3);
  const std::string good_labels = LabelsIdx({1, 2, 3, 4});
  auto expect_data_loss = [&](const std::string& img, const std::string& lab,
                              const std::string& names) {
    WriteFile(images, img);
    WriteFile(labels, lab);
    auto r = LoadFashionMnist(dir.path().string(), "train");
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kDataLoss);
    CHECK_MESSAGE(Contains(r.status().message(), names), r.status().message());
  };
  SUBCASE("bad magic") {
    std::string img = good_images;
    img[3] = 0x02;
    expect_data_loss(img, good_labels, "train-images-idx3-ubyte");
  }
  SUBCASE("labels file with an image magic") {
    expect_data_loss(good_images, good_images, "train-labels");
  }
  SUBCASE("truncated pixels") {
    expect_data_loss(good_images.substr(0, good_images.size() - 3), good_labels, "truncated");
  }
  SUBCASE("truncated header") {
    expect_data_loss(good_images.substr(0, 9), good_labels, "train-images");
  }
  SUBCASE("empty file") { expect_data_loss("", good_labels, "train-images"); }
  SUBCASE("trailing bytes") { expect_data_loss(good_images + "xx", good_labels, "train-images"); }
  SUBCASE("count mismatch") { expect_data_loss(good_images, LabelsIdx({1, 2, 3}), "labels"); }
  SUBCASE("label out of range") {
    expect_data_loss(good_images, LabelsIdx({1, 2, 13, 4}), "out of range");
  }
  SUBCASE("zero rows") { expect_data_loss(ImagesIdx(4, 0, 3), good_labels, "zero"); }
  SUBCASE("header promising billions of images") {
    std::string img = good_images;
    img[4] = '\x7f';  // count = 0x7f000004
    expect_data_loss(img, good_labels, "train-images");
  }
}

TEST_CASE("LoadFashionMnist returns kDataLoss for truncated or corrupt gzip files") {
  TempDir dir;
  std::vector<uint8_t> lab(300);
  for (size_t i = 0; i < lab.size(); ++i) lab[i] = static_cast<uint8_t>(i % 10);
  WriteGz(dir.path() / "train-labels-idx1-ubyte.gz", LabelsIdx(lab));
  const fs::path gz = dir.path() / "train-images-idx3-ubyte.gz";
  WriteGz(gz, ImagesIdx(300, 28, 28));
  std::string compressed = verdant::testing::ReadFile(gz);
  REQUIRE(compressed.size() > 100);
  SUBCASE("truncated") { WriteFile(gz, compressed.substr(0, compressed.size() / 2)); }
  SUBCASE("corrupt deflate stream") {
    for (size_t i = 40; i < 60; ++i) compressed[i] = static_cast<char>(compressed[i] ^ 0x5a);
    WriteFile(gz, compressed);
  }
  SUBCASE("corrupt checksum") {
    compressed[compressed.size() - 6] = static_cast<char>(compressed[compressed.size() - 6] ^ 0xff);
    WriteFile(gz, compressed);
  }
  auto r = LoadFashionMnist(dir.path().string(), "train");
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == StatusCode::kDataLoss);
  CHECK_MESSAGE(Contains(r.status().message(), "train-images-idx3-ubyte.gz"), r.status().message());
}

TEST_CASE("DefaultFashionMnistDir honours VERDANT_DATA_DIR") {
  const char* old = std::getenv("VERDANT_DATA_DIR");
  std::string saved = old ? old : "";
  ::setenv("VERDANT_DATA_DIR", "/tmp/somewhere", 1);
  CHECK(DefaultFashionMnistDir() == "/tmp/somewhere");
  ::unsetenv("VERDANT_DATA_DIR");
  CHECK(DefaultFashionMnistDir() == "/usr/share/datasets/fashion-mnist");
  if (old) ::setenv("VERDANT_DATA_DIR", saved.c_str(), 1);
}

TEST_CASE("Subset copies the chosen examples in order and skips bad indices") {
  Dataset d;
  d.rows = 1;
  d.cols = 2;
  d.images = {0, 1, 10, 11, 20, 21};
  d.labels = {0, 1, 2};
  std::vector<size_t> idx = {2, 0, 7, 2};
  Dataset s = Subset(d, idx);
  CHECK(s.rows == 1);
  CHECK(s.cols == 2);
  CHECK(s.labels == std::vector<uint8_t>{2, 0, 2});
  CHECK(s.images == std::vector<float>{20, 21, 0, 1, 20, 21});
}

TEST_CASE("the real Fashion-MNIST test split loads (Debian dataset-fashion-mnist)") {
  const std::string dir = DefaultFashionMnistDir();
  if (!fs::exists(fs::path(dir) / "t10k-images-idx3-ubyte.gz") &&
      !fs::exists(fs::path(dir) / "t10k-images-idx3-ubyte")) {
    MESSAGE("skipped: no Fashion-MNIST under " << dir << " (apt install dataset-fashion-mnist)");
    return;
  }
  auto ds = LoadFashionMnist(dir, "test");
  REQUIRE_MESSAGE(ds.ok(), ds.status().ToString());
  CHECK(ds->size() == 10000);
  CHECK(ds->rows == 28);
  CHECK(ds->cols == 28);
  std::vector<int> hist(10);
  for (uint8_t l : ds->labels) hist[l]++;
  for (int h : hist) CHECK(h == 1000);
  double sum = 0, sq = 0;
  for (float v : ds->images) {
    sum += v;
    sq += double{v} * v;
  }
  const double mean = sum / ds->images.size();
  const double sd = std::sqrt(sq / ds->images.size() - mean * mean);
  CHECK(std::abs(mean) < 0.05);  // normalised with the train statistics
  CHECK(std::abs(sd - 1.0) < 0.05);
}
