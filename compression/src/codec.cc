#include "verdant/compression/codec.h"

#include <bit>
#include <cstring>

#include "verdant/core/parameter_vector.h"

namespace verdant {

static_assert(std::endian::native == std::endian::little,
              "Verdant's wire encodings assume a little-endian host");

Status UpdateCodec::DecodeAccumulate(std::span<const uint8_t> bytes, float weight,
                                     std::span<float> acc) const {
  std::vector<float> tmp(acc.size());
  VERDANT_RETURN_IF_ERROR(Decode(bytes, tmp));
  for (size_t i = 0; i < acc.size(); ++i) acc[i] += weight * tmp[i];
  return OkStatus();
}

Status UpdateCodec::Validate(std::span<const uint8_t> bytes, size_t n) const {
  std::vector<float> tmp(n);
  VERDANT_RETURN_IF_ERROR(Decode(bytes, tmp));
  if (!AllFinite(tmp)) return DataLossError("decoded update holds NaN or Inf");
  return OkStatus();
}

Status IdentityCodec::Encode(std::span<const float> values, Rng& /*rng*/,
                             std::vector<uint8_t>& out) {
  out.resize(values.size() * sizeof(float));
  if (!values.empty()) std::memcpy(out.data(), values.data(), out.size());
  return OkStatus();
}

static Status CheckIdentitySize(size_t bytes, size_t n) {
  if (bytes != n * sizeof(float)) {
    return DataLossError("identity payload has " + std::to_string(bytes) + " bytes, expected " +
                         std::to_string(n * sizeof(float)) + " for " + std::to_string(n) +
                         " values");
  }
  return OkStatus();
}

Status IdentityCodec::Decode(std::span<const uint8_t> bytes, std::span<float> out) const {
  VERDANT_RETURN_IF_ERROR(CheckIdentitySize(bytes.size(), out.size()));
  if (!out.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
  return OkStatus();
}

Status IdentityCodec::DecodeAccumulate(std::span<const uint8_t> bytes, float weight,
                                       std::span<float> acc) const {
  VERDANT_RETURN_IF_ERROR(CheckIdentitySize(bytes.size(), acc.size()));
  const uint8_t* p = bytes.data();
  float* a = acc.data();
  const size_t n = acc.size();
  for (size_t i = 0; i < n; ++i) {
    float x;
    std::memcpy(&x, p + i * sizeof(float), sizeof(float));
    a[i] += weight * x;
  }
  return OkStatus();
}

Status IdentityCodec::Validate(std::span<const uint8_t> bytes, size_t n) const {
  VERDANT_RETURN_IF_ERROR(CheckIdentitySize(bytes.size(), n));
  float acc = 0.0f;
  const uint8_t* p = bytes.data();
  for (size_t i = 0; i < n; ++i) {
    float x;
    std::memcpy(&x, p + i * sizeof(float), sizeof(float));
    acc += (x - x);
  }
  if (acc != 0.0f) return DataLossError("update holds NaN or Inf");
  return OkStatus();
}

static Status RegisterBuiltins(Registry<UpdateCodec>& reg) {
  VERDANT_RETURN_IF_ERROR(reg.Register("identity", [](const OptionMap& o) -> Result<std::unique_ptr<UpdateCodec>> {
    if (o.Has("arg") && !o.values().at("arg").empty()) {
      return InvalidArgumentError("codec 'identity' takes no argument");
    }
    return std::unique_ptr<UpdateCodec>(std::make_unique<IdentityCodec>());
  }));
  return OkStatus();
}

Registry<UpdateCodec>& CodecRegistry() {
  static Registry<UpdateCodec>* reg = [] {
    auto* r = new Registry<UpdateCodec>("codec");
    RegisterBuiltins(*r).IgnoreError();
    return r;
  }();
  return *reg;
}

Result<std::unique_ptr<UpdateCodec>> CreateCodec(std::string_view spec) {
  auto [name, arg] = SplitSpec(spec);
  OptionMap o;
  if (!arg.empty()) o.Set("arg", arg);
  auto r = CodecRegistry().Create(name, o);
  if (!r.ok()) return r.status().WithContext("codec '" + std::string(spec) + "'");
  return r;
}

}  // namespace verdant
