// IDX reader (gzipped or plain) and Dataset helpers. No LibTorch here.
#include "verdant/client/dataset.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>

namespace verdant {
namespace {

struct GzFileCloser {
  void operator()(gzFile_s* f) const {
    if (f != nullptr) gzclose(f);
  }
};
using GzFilePtr = std::unique_ptr<gzFile_s, GzFileCloser>;

// An IDX file's header (u8 element type only) and the bytes that follow.
struct IdxData {
  std::vector<uint32_t> dims;  // dims[0] = the number of items in the file
  size_t items_read = 0;       // <= dims[0]
  std::vector<uint8_t> bytes;  // items_read * product(dims[1..])
};

// Upper bound on the bytes of one item (an image of up to 4096 x 4096).
constexpr uint64_t kMaxItemBytes = uint64_t{4096} * 4096;

class GzReader {
 public:
  GzReader(std::string path, GzFilePtr file) : path_(std::move(path)), file_(std::move(file)) {}

  // Reads exactly n bytes into dst; kDataLoss when the file ends early or the
  // stream is corrupt. `what` names the part being read for the message.
  Status ReadExactly(uint8_t* dst, size_t n, std::string_view what) {
    size_t done = 0;
    while (done < n) {
      unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - done, size_t{1} << 24));
      int got = gzread(file_.get(), dst + done, chunk);
      if (got < 0)
        return DataLossError(path_ + ": corrupt data while reading " + std::string(what) + " (" +
                             ErrorText() + ")");
      if (got == 0) {
        std::string detail = ErrorText();
        return DataLossError(path_ + ": truncated file: " + std::string(what) + " needs " +
                             std::to_string(n) + " bytes, got " + std::to_string(done) +
                             (detail.empty() ? "" : " (" + detail + ")"));
      }
      done += static_cast<size_t>(got);
    }
    return OkStatus();
  }

  // True (through the result) when at least one more byte can be read.
  Result<bool> HasMore() {
    uint8_t b;
    int got = gzread(file_.get(), &b, 1);
    if (got < 0)
      return DataLossError(path_ + ": corrupt data at end of file (" + ErrorText() + ")");
    return got > 0;
  }

 private:
  std::string ErrorText() {
    int errnum = Z_OK;
    const char* msg = gzerror(file_.get(), &errnum);
    if (errnum == Z_OK || msg == nullptr) return "";
    return msg;
  }
  std::string path_;
  GzFilePtr file_;
};

uint32_t BigEndian32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Reads an IDX file of unsigned bytes with `ndims` dimensions, at most
// `max_items` items (0 = all). gzread reads plain files transparently.
Result<IdxData> ReadIdx(const std::string& path, int ndims, size_t max_items) {
  GzFilePtr file(gzopen(path.c_str(), "rb"));
  if (!file) return NotFoundError(path + ": cannot open (" + std::strerror(errno) + ")");
  gzbuffer(file.get(), 1 << 17);
  GzReader reader(path, std::move(file));

  std::array<uint8_t, 4> magic{};
  VERDANT_RETURN_IF_ERROR(reader.ReadExactly(magic.data(), 4, "the magic number"));
  // IDX magic: two zero bytes, the type code (0x08 = unsigned byte), ndims.
  if (magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08 || magic[3] != ndims) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "0x%02x%02x%02x%02x", magic[0], magic[1], magic[2], magic[3]);
    char want[16];
    std::snprintf(want, sizeof(want), "0x000008%02x", ndims);
    return DataLossError(path + ": bad IDX magic number " + buf + " (expected " + want +
                         ": unsigned bytes, " + std::to_string(ndims) + " dimensions)");
  }
  IdxData out;
  out.dims.resize(static_cast<size_t>(ndims));
  std::vector<uint8_t> raw(4 * static_cast<size_t>(ndims));
  VERDANT_RETURN_IF_ERROR(reader.ReadExactly(raw.data(), raw.size(), "the dimensions"));
  uint64_t item_bytes = 1;
  for (int i = 0; i < ndims; ++i) {
    out.dims[static_cast<size_t>(i)] = BigEndian32(raw.data() + 4 * i);
    if (i > 0) {
      uint32_t d = out.dims[static_cast<size_t>(i)];
      if (d == 0) return DataLossError(path + ": dimension " + std::to_string(i) + " is zero");
      item_bytes *= d;
      if (item_bytes > kMaxItemBytes) {
        return DataLossError(path + ": implausible item size (over " +
                             std::to_string(kMaxItemBytes) + " bytes)");
      }
    }
  }
  const size_t count = out.dims[0];
  out.items_read = max_items > 0 ? std::min(count, max_items) : count;

  // Grow the buffer as data arrives, so a corrupt header claiming billions
  // of items fails on the short read instead of on a giant allocation.
  const size_t total = out.items_read * static_cast<size_t>(item_bytes);
  constexpr size_t kChunk = size_t{8} << 20;
  out.bytes.reserve(std::min(total, size_t{64} << 20));
  size_t done = 0;
  while (done < total) {
    size_t n = std::min(kChunk, total - done);
    out.bytes.resize(done + n);
    Status st = reader.ReadExactly(out.bytes.data() + done, n, "the data");
    if (!st.ok()) {
      return DataLossError(path + ": truncated or corrupt: header promises " +
                           std::to_string(count) + " items of " + std::to_string(item_bytes) +
                           " bytes; " + st.message());
    }
    done += n;
  }
  if (out.items_read == count) {
    VERDANT_ASSIGN_OR_RETURN(bool more, reader.HasMore());
    if (more) {
      return DataLossError(path + ": unexpected bytes after the " + std::to_string(count) +
                           " items the header declares");
    }
  }
  return out;
}

// dir/base.gz if it exists, else dir/base if it exists, else kNotFound.
Result<std::string> FindFile(const std::string& dir, const std::string& base) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path gz = fs::path(dir) / (base + ".gz");
  if (fs::is_regular_file(gz, ec)) return gz.string();
  fs::path plain = fs::path(dir) / base;
  if (fs::is_regular_file(plain, ec)) return plain.string();
  return NotFoundError("Fashion-MNIST file not found: neither " + gz.string() + " nor " +
                       plain.string() +
                       " exists (install the Debian package dataset-fashion-mnist or set "
                       "VERDANT_DATA_DIR)");
}

}  // namespace

Result<Dataset> LoadFashionMnist(const std::string& dir, std::string_view split,
                                 size_t max_examples) {
  std::string prefix;
  if (split == "train") {
    prefix = "train";
  } else if (split == "test" || split == "t10k") {
    prefix = "t10k";
  } else {
    return InvalidArgumentError("unknown Fashion-MNIST split '" + std::string(split) +
                                "' (valid: train, test)");
  }
  VERDANT_ASSIGN_OR_RETURN(std::string images_path, FindFile(dir, prefix + "-images-idx3-ubyte"));
  VERDANT_ASSIGN_OR_RETURN(std::string labels_path, FindFile(dir, prefix + "-labels-idx1-ubyte"));

  VERDANT_ASSIGN_OR_RETURN(IdxData labels, ReadIdx(labels_path, 1, max_examples));
  VERDANT_ASSIGN_OR_RETURN(IdxData images, ReadIdx(images_path, 3, max_examples));
  if (labels.dims[0] != images.dims[0]) {
    return DataLossError(images_path + " holds " + std::to_string(images.dims[0]) + " images but " +
                         labels_path + " holds " + std::to_string(labels.dims[0]) + " labels");
  }
  for (size_t i = 0; i < labels.bytes.size(); ++i) {
    if (labels.bytes[i] >= kFashionMnistClasses) {
      return DataLossError(labels_path + ": label " + std::to_string(labels.bytes[i]) +
                           " of example " + std::to_string(i) + " is out of range [0, 10)");
    }
  }

  Dataset ds;
  ds.rows = images.dims[1];
  ds.cols = images.dims[2];
  ds.labels = std::move(labels.bytes);
  ds.images.resize(images.bytes.size());
  // Lookup table: one multiply-free pass over the pixels.
  std::array<float, 256> lut{};
  for (int v = 0; v < 256; ++v) {
    lut[static_cast<size_t>(v)] =
        (static_cast<float>(v) / 255.0f - kFashionMnistMean) / kFashionMnistStd;
  }
  const uint8_t* src = images.bytes.data();
  float* dst = ds.images.data();
  for (size_t i = 0, n = images.bytes.size(); i < n; ++i) dst[i] = lut[src[i]];
  return ds;
}

std::string DefaultFashionMnistDir() {
  const char* env = std::getenv("VERDANT_DATA_DIR");
  if (env != nullptr && env[0] != '\0') return env;
  return "/usr/share/datasets/fashion-mnist";
}

Dataset Subset(const Dataset& data, std::span<const size_t> indices) {
  Dataset out;
  out.rows = data.rows;
  out.cols = data.cols;
  const size_t d = data.example_size();
  size_t valid = 0;
  for (size_t idx : indices) valid += idx < data.size() ? 1 : 0;
  out.labels.reserve(valid);
  out.images.resize(valid * d);
  float* dst = out.images.data();
  for (size_t idx : indices) {
    if (idx >= data.size()) continue;
    out.labels.push_back(data.labels[idx]);
    std::memcpy(dst, data.images.data() + idx * d, d * sizeof(float));
    dst += d;
  }
  return out;
}

}  // namespace verdant
