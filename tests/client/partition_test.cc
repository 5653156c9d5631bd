// Partitioners: disjoint full coverage, determinism, skew, errors.
#include "verdant/client/partition.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "verdant/testing/temp_dir.h"

using namespace verdant;

namespace {

// 10 classes of unequal size (class c holds 100 + 20*c examples), interleaved.
std::vector<uint8_t> Labels() {
  std::vector<uint8_t> l;
  for (int c = 0; c < 10; ++c)
    l.insert(l.end(), static_cast<size_t>(100 + 20 * c), static_cast<uint8_t>(c));
  // A fixed interleaving so classes are not contiguous.
  std::vector<uint8_t> out(l.size());
  for (size_t i = 0; i < l.size(); ++i) out[(i * 7919) % l.size()] = l[i];
  return out;
}

std::vector<std::vector<size_t>> AllShards(const std::string& spec,
                                           const std::vector<uint8_t>& labels, size_t n,
                                           uint64_t seed) {
  std::vector<std::vector<size_t>> shards;
  for (size_t i = 0; i < n; ++i) {
    auto r = PartitionIndices(spec, labels, 10, n, i, seed);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    shards.push_back(std::move(*r));
  }
  return shards;
}

void CheckDisjointCover(const std::vector<std::vector<size_t>>& shards, size_t n_examples) {
  std::vector<int> seen(n_examples, 0);
  for (const auto& s : shards) {
    CHECK_FALSE(s.empty());
    CHECK(std::is_sorted(s.begin(), s.end()));
    for (size_t i : s) {
      REQUIRE(i < n_examples);
      seen[i]++;
    }
  }
  CHECK(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; }));
}

// Mean over clients of the largest class's share of the client's shard.
double MeanTopClassShare(const std::vector<std::vector<size_t>>& shards,
                         const std::vector<uint8_t>& labels) {
  double total = 0;
  for (const auto& s : shards) {
    std::vector<int> h(10);
    for (size_t i : s) h[labels[i]]++;
    total +=
        static_cast<double>(*std::max_element(h.begin(), h.end())) / static_cast<double>(s.size());
  }
  return total / static_cast<double>(shards.size());
}

}  // namespace

TEST_CASE("iid and dirichlet shards are disjoint, non-empty and cover every example once") {
  const uint64_t seed = verdant::testing::TestSeed(17);
  MESSAGE("seed " << seed);
  const auto labels = Labels();
  for (const std::string spec :
       {"iid", "dirichlet:0.1", "dirichlet:0.5", "dirichlet:100", "dirichlet:0.001"}) {
    for (size_t n : {1, 3, 10, 40}) {
      CAPTURE(spec);
      CAPTURE(n);
      CheckDisjointCover(AllShards(spec, labels, n, seed), labels.size());
    }
  }
}

TEST_CASE("iid shard sizes differ by at most one") {
  const auto labels = Labels();  // 1900 examples
  auto shards = AllShards("iid", labels, 7, 3);
  for (const auto& s : shards) CHECK((s.size() == 271 || s.size() == 272));
}

TEST_CASE("partitions are deterministic for a seed and change with the seed") {
  const auto labels = Labels();
  for (const std::string spec : {"iid", "dirichlet:0.3"}) {
    CAPTURE(spec);
    auto a = AllShards(spec, labels, 5, 99);
    auto b = AllShards(spec, labels, 5, 99);
    auto c = AllShards(spec, labels, 5, 100);
    CHECK(a == b);
    CHECK(a != c);
    auto all = PartitionAllIndices(spec, labels, 10, 5, 99);
    REQUIRE(all.ok());
    CHECK(*all == a);
  }
}

TEST_CASE("a fixed seed gives the same split on every platform (golden values)") {
  // Guards the cross-platform promise: only verdant::Rng feeds the split.
  const auto labels = Labels();
  auto iid = PartitionIndices("iid", labels, 10, 4, 2, 7);
  auto dir = PartitionIndices("dirichlet:0.5", labels, 10, 4, 2, 7);
  REQUIRE(iid.ok());
  REQUIRE(dir.ok());
  const size_t iid_sum = std::accumulate(iid->begin(), iid->end(), size_t{0});
  const size_t dir_sum = std::accumulate(dir->begin(), dir->end(), size_t{0});
  MESSAGE("iid: " << iid->size() << " examples, index sum " << iid_sum
                  << "; dirichlet: " << dir->size() << " examples, index sum " << dir_sum);
  CHECK(iid->size() == 475);
  CHECK(iid_sum == 454577);
  CHECK(dir->size() == 526);
  CHECK(dir_sum == 500074);
}

TEST_CASE("dirichlet label skew: small alpha concentrates labels, large alpha approaches iid") {
  const auto labels = Labels();
  const double iid = MeanTopClassShare(AllShards("iid", labels, 10, 5), labels);
  const double mild = MeanTopClassShare(AllShards("dirichlet:100", labels, 10, 5), labels);
  const double skewed = MeanTopClassShare(AllShards("dirichlet:0.1", labels, 10, 5), labels);
  MESSAGE("mean top-class share: iid " << iid << ", dirichlet:100 " << mild << ", dirichlet:0.1 "
                                       << skewed);
  CHECK(iid < 0.25);
  CHECK(mild < 0.3);
  CHECK(skewed > 0.5);
}

TEST_CASE("dirichlet guarantees a minimum shard size even when every draw is lopsided") {
  // 40 clients over 400 examples with a tiny alpha: every client still gets
  // min(10, N/n) = 10 examples.
  std::vector<uint8_t> labels(400);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<uint8_t>(i % 10);
  auto all = PartitionAllIndices("dirichlet:0.01", labels, 10, 40, 1);
  REQUIRE(all.ok());
  CheckDisjointCover(*all, labels.size());
  for (const auto& s : *all) CHECK(s.size() >= 10);
  // As many clients as examples: one each.
  auto tight = PartitionAllIndices("dirichlet:0.05", labels, 10, 400, 1);
  REQUIRE(tight.ok());
  for (const auto& s : *tight) CHECK(s.size() == 1);
}

TEST_CASE("partition errors are kInvalidArgument with a clear message") {
  const auto labels = Labels();
  auto expect_invalid = [&](std::string_view spec, size_t n, size_t i, const std::string& part,
                            int classes = 10) {
    auto r = PartitionIndices(spec, labels, classes, n, i, 1);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    CHECK_MESSAGE(r.status().message().find(part) != std::string::npos, r.status().message());
  };
  expect_invalid("shards", 4, 0, "unknown partition spec");
  expect_invalid("IID", 4, 0, "unknown partition spec");
  expect_invalid("dirichlet:", 4, 0, "not a number");
  expect_invalid("dirichlet:abc", 4, 0, "not a number");
  expect_invalid("dirichlet:0.5x", 4, 0, "not a number");
  expect_invalid("dirichlet:0", 4, 0, "alpha");
  expect_invalid("dirichlet:-1", 4, 0, "alpha");
  expect_invalid("dirichlet:inf", 4, 0, "alpha");
  expect_invalid("dirichlet:nan", 4, 0, "alpha");
  expect_invalid("iid", 4, 4, "client_index");
  expect_invalid("iid", 0, 0, "client_index");
  expect_invalid("iid", 5000, 0, "examples");
  expect_invalid("dirichlet:1", 4, 0, "label", /*classes=*/5);
  expect_invalid("iid", 4, 0, "num_classes", /*classes=*/0);
}
