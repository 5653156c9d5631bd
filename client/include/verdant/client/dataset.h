// verdant/client/dataset.h
//
// Dataset: an in-memory image-classification set (float32 pixels, one uint8
// label per example), and the Fashion-MNIST IDX reader that fills it. The
// reader takes the gzipped IDX files of Debian's dataset-fashion-mnist
// directly (zlib), or the same files unzipped, and never crashes on a
// truncated or corrupt file: it returns kDataLoss naming the file.
//   auto train = LoadFashionMnist(DefaultFashionMnistDir(), "train");
//   if (!train.ok()) return train.status();
//   Dataset shard = Subset(*train, indices);     // e.g. from PartitionIndices
//   float first_pixel = shard.images[0];          // example i starts at i*rows*cols
// Thread-safety: Dataset is a value type (concurrent const access is safe);
// the free functions are reentrant.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "verdant/core/status.h"

namespace verdant {

struct Dataset {
  // size() x (rows*cols) pixels, row-major per example. Fashion-MNIST pixels
  // are normalised as (x/255 - kFashionMnistMean) / kFashionMnistStd.
  std::vector<float> images;
  // size() labels in [0, 10) for Fashion-MNIST.
  std::vector<uint8_t> labels;
  size_t rows = 28;
  size_t cols = 28;
  // Number of examples (labels.size()).
  size_t size() const { return labels.size(); }
  // Pixels per example (rows * cols).
  size_t example_size() const { return rows * cols; }
};

// Normalisation constants applied by LoadFashionMnist (training-set mean and
// standard deviation of x/255).
inline constexpr float kFashionMnistMean = 0.2860f;
inline constexpr float kFashionMnistStd = 0.3530f;
inline constexpr int kFashionMnistClasses = 10;

// Reads `split` ("train" -> train-*, "test" or "t10k" -> t10k-*) of
// Fashion-MNIST from `dir`, i.e. {train,t10k}-images-idx3-ubyte[.gz] and
// {train,t10k}-labels-idx1-ubyte[.gz] (the .gz is tried first). Reads only
// the first `max_examples` examples when it is > 0 (faster for tests).
// Errors: kInvalidArgument for an unknown split; kNotFound when a file is
// missing; kDataLoss (naming the file) for a bad magic number, implausible
// dimensions, a truncated or corrupt file, trailing bytes, labels >= 10, or
// image and label files that disagree on the count.
Result<Dataset> LoadFashionMnist(const std::string& dir, std::string_view split,
                                 size_t max_examples = 0);

// $VERDANT_DATA_DIR if set and non-empty, else the Debian package's
// directory /usr/share/datasets/fashion-mnist.
std::string DefaultFashionMnistDir();

// The examples of `data` at `indices`, in that order (duplicates allowed).
// Indices >= data.size() are skipped. Keeps rows and cols.
Dataset Subset(const Dataset& data, std::span<const size_t> indices);

}  // namespace verdant
