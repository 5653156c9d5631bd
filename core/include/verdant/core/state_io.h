// verdant/core/state_io.h
//
// A tiny binary writer/reader for saved state (strategies, optimizers, the
// coordinator's checkpoint file):
// little-endian fixed-width integers, doubles and floats by their bit
// patterns (so a round trip is byte-exact), length-prefixed strings and float
// vectors. The reader checks every length against the bytes left and returns
// kDataLoss instead of reading past the end.
//   StateWriter w("VOPT", 1);  w.String("adam");  w.U64(t);  w.Floats(m);
//   StateReader r(bytes);  VERDANT_RETURN_IF_ERROR(r.Header("VOPT", 1));
// A format with its own header starts from StateWriter() and Raw() bytes,
// and names itself in the reader's errors: StateReader(bytes, "checkpoint").
// Thread-safety: value types, one per thread.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "verdant/core/status.h"

namespace verdant {

class StateWriter {
 public:
  StateWriter() = default;
  StateWriter(std::string_view magic, uint32_t version) {
    out_.append(magic);
    U32(version);
  }
  void U32(uint32_t v) { Raw(&v, sizeof v); }
  void U64(uint64_t v) { Raw(&v, sizeof v); }
  void I64(int64_t v) { Raw(&v, sizeof v); }
  void F64(double v) { Raw(&v, sizeof v); }
  // Bytes as they are, without a length (magics, trailers).
  void Raw(std::string_view bytes) { out_.append(bytes); }
  void String(std::string_view s) {
    U64(s.size());
    out_.append(s);
  }
  void Floats(std::span<const float> v) {
    U64(v.size());
    if (!v.empty()) Raw(v.data(), v.size() * sizeof(float));
  }
  std::string Take() { return std::move(out_); }

 private:
  void Raw(const void* p, size_t n) { out_.append(static_cast<const char*>(p), n); }
  std::string out_;
};

class StateReader {
 public:
  // `what` names the format in errors ("truncated state (string)").
  explicit StateReader(std::string_view bytes, std::string_view what = "state") : in_(bytes), what_(what) {}
  Status Header(std::string_view magic, uint32_t version) {
    if (in_.size() < magic.size() || in_.substr(0, magic.size()) != magic) {
      return DataLossError(what_ + " does not start with '" + std::string(magic) + "'");
    }
    in_.remove_prefix(magic.size());
    uint32_t v = 0;
    VERDANT_RETURN_IF_ERROR(U32(v));
    if (v != version) {
      return DataLossError(what_ + " version " + std::to_string(v) + ", this build reads " +
                           std::to_string(version));
    }
    return OkStatus();
  }
  Status U32(uint32_t& v) { return Raw(&v, sizeof v); }
  Status U64(uint64_t& v) { return Raw(&v, sizeof v); }
  Status I64(int64_t& v) { return Raw(&v, sizeof v); }
  Status F64(double& v) { return Raw(&v, sizeof v); }
  Status String(std::string& s) {
    uint64_t n = 0;
    VERDANT_RETURN_IF_ERROR(U64(n));
    if (n > in_.size()) return DataLossError("truncated " + what_ + " (string)");
    s.assign(in_.data(), n);
    in_.remove_prefix(n);
    return OkStatus();
  }
  Status Floats(std::vector<float>& v) {
    uint64_t n = 0;
    VERDANT_RETURN_IF_ERROR(U64(n));
    if (n > in_.size() / sizeof(float)) return DataLossError("truncated " + what_ + " (vector)");
    v.resize(n);
    return Raw(v.data(), n * sizeof(float));
  }
  Status ExpectEnd() const {
    if (!in_.empty()) return DataLossError(std::to_string(in_.size()) + " trailing bytes in " + what_);
    return OkStatus();
  }

 private:
  Status Raw(void* p, size_t n) {
    if (n > in_.size()) return DataLossError("truncated " + what_);
    if (n != 0) std::memcpy(p, in_.data(), n);
    in_.remove_prefix(n);
    return OkStatus();
  }
  std::string_view in_;
  std::string what_;
};

}  // namespace verdant
