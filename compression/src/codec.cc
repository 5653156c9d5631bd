#include "verdant/compression/codec.h"

#include <bit>
#include <charconv>
#include <cstring>
#include <set>

#include "codec_internal.h"
#include "verdant/compression/codecs.h"
#include "verdant/compression/half.h"
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
  // assign, not resize + memcpy: a reused buffer is copied into without
  // being zero-filled first.
  const auto bytes = IdentityBytes(values);
  out.assign(bytes.begin(), bytes.end());
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
  if (codec_internal::MaxMagnitudeBits(bytes.data(), n) >= 0x7f800000u) {
    return DataLossError("update holds NaN or Inf");
  }
  return OkStatus();
}

// ---- fp16 ----------------------------------------------------------------------

static Status CheckFp16Size(size_t bytes, size_t n) {
  if (bytes != n * 2) {
    return DataLossError("fp16 payload has " + std::to_string(bytes) + " bytes, expected " +
                         std::to_string(n * 2) + " for " + std::to_string(n) + " values");
  }
  return OkStatus();
}

Status Fp16Codec::Encode(std::span<const float> values, Rng& /*rng*/, std::vector<uint8_t>& out) {
  out.clear();
  if (codec_internal::MaxMagnitudeBits(values.data(), values.size()) >= 0x7f800000u) {
    return InvalidArgumentError("cannot encode NaN or Inf as fp16");
  }
  out.resize(values.size() * 2);
  FloatsToHalves(values, out.data());
  return OkStatus();
}

Status Fp16Codec::Decode(std::span<const uint8_t> bytes, std::span<float> out) const {
  VERDANT_RETURN_IF_ERROR(CheckFp16Size(bytes.size(), out.size()));
  if (!HalvesToFloats(bytes.data(), out.size(), out.data())) return DataLossError("fp16 payload holds Inf or NaN");
  return OkStatus();
}

Status Fp16Codec::DecodeAccumulate(std::span<const uint8_t> bytes, float weight, std::span<float> acc) const {
  VERDANT_RETURN_IF_ERROR(CheckFp16Size(bytes.size(), acc.size()));
  if (!HalvesAccumulate(bytes.data(), acc.size(), weight, acc.data())) {
    return DataLossError("fp16 payload holds Inf or NaN");
  }
  return OkStatus();
}

Status Fp16Codec::Validate(std::span<const uint8_t> bytes, size_t n) const {
  VERDANT_RETURN_IF_ERROR(CheckFp16Size(bytes.size(), n));
  if (!HalvesFinite(bytes.data(), n)) return DataLossError("fp16 payload holds Inf or NaN");
  return OkStatus();
}

// ---- spec parsing ------------------------------------------------------------------

namespace codec_internal {

static std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

Result<OptionMap> ParseArgs(std::string_view codec, std::string_view arg, std::string_view positional_key) {
  OptionMap o;
  bool first = true;
  for (const std::string& item : SplitList(arg, ',')) {
    const auto eq = item.find('=');
    std::string key, value;
    if (eq == std::string::npos) {
      if (!first || positional_key.empty()) {
        return InvalidArgumentError("codec '" + std::string(codec) + "': argument '" + item +
                                    "' needs the form key=value");
      }
      key = std::string(positional_key);
      value = item;
    } else {
      key = std::string(Trim(std::string_view(item).substr(0, eq)));
      value = std::string(Trim(std::string_view(item).substr(eq + 1)));
      if (key.empty() || value.empty()) {
        return InvalidArgumentError("codec '" + std::string(codec) + "': malformed argument '" + item + "'");
      }
    }
    if (o.Has(key)) {
      return InvalidArgumentError("codec '" + std::string(codec) + "': argument '" + key + "' given twice");
    }
    o.Set(key, value);
    first = false;
  }
  return o;
}

std::string FormatDouble(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  if (ec != std::errc()) return std::to_string(v);
  return std::string(buf, end);
}

Status RejectComposition(std::string_view codec, const OptionMap& o) {
  if (o.Has("next")) {
    return InvalidArgumentError("codec '" + std::string(codec) + "' cannot be followed by '+" +
                                o.values().at("next") +
                                "': only topk composes with a codec for its kept values (e.g. topk:0.1+int8)");
  }
  return OkStatus();
}

}  // namespace codec_internal

namespace {

using codec_internal::ParseArgs;
using codec_internal::RejectComposition;

std::string ArgOf(const OptionMap& o) { return o.Has("arg") ? o.values().at("arg") : std::string(); }

Status NoArgument(std::string_view codec, const OptionMap& o) {
  if (!ArgOf(o).empty()) return InvalidArgumentError("codec '" + std::string(codec) + "' takes no argument");
  return RejectComposition(codec, o);
}

// Reads an integer option in [lo, hi].
Result<int64_t> IntInRange(const OptionMap& o, const std::string& key, int64_t fallback, int64_t lo, int64_t hi) {
  VERDANT_ASSIGN_OR_RETURN(int64_t v, o.GetInt(key, fallback));
  if (v < lo || v > hi) {
    return InvalidArgumentError("option '" + key + "' must be in [" + std::to_string(lo) + ", " +
                                std::to_string(hi) + "], got " + std::to_string(v));
  }
  return v;
}

Result<std::unique_ptr<UpdateCodec>> MakeUniform(int bits, const OptionMap& spec) {
  const std::string name = bits == 8 ? "int8" : "int4";
  VERDANT_RETURN_IF_ERROR(RejectComposition(name, spec));
  VERDANT_ASSIGN_OR_RETURN(OptionMap o, ParseArgs(name, ArgOf(spec), "chunk"));
  UniformQuantCodec::Options opt;
  opt.bits = bits;
  VERDANT_ASSIGN_OR_RETURN(int64_t chunk, IntInRange(o, "chunk", 1024, 1, int64_t{1} << 24));
  opt.chunk = static_cast<size_t>(chunk);
  VERDANT_RETURN_IF_ERROR(o.CheckAllUsed(name));
  VERDANT_ASSIGN_OR_RETURN(auto c, UniformQuantCodec::Create(opt));
  return std::unique_ptr<UpdateCodec>(std::move(c));
}

Result<std::unique_ptr<UpdateCodec>> MakeQsgd(const OptionMap& spec) {
  VERDANT_RETURN_IF_ERROR(RejectComposition("qsgd", spec));
  VERDANT_ASSIGN_OR_RETURN(OptionMap o, ParseArgs("qsgd", ArgOf(spec), "levels"));
  QsgdCodec::Options opt;
  VERDANT_ASSIGN_OR_RETURN(int64_t levels, IntInRange(o, "levels", 16, 1, 32767));
  VERDANT_ASSIGN_OR_RETURN(int64_t chunk, IntInRange(o, "chunk", 512, 1, int64_t{1} << 24));
  opt.levels = static_cast<int>(levels);
  opt.chunk = static_cast<size_t>(chunk);
  VERDANT_RETURN_IF_ERROR(o.CheckAllUsed("qsgd"));
  VERDANT_ASSIGN_OR_RETURN(auto c, QsgdCodec::Create(opt));
  return std::unique_ptr<UpdateCodec>(std::move(c));
}

Result<std::unique_ptr<UpdateCodec>> MakeTopK(const OptionMap& spec) {
  VERDANT_ASSIGN_OR_RETURN(OptionMap o, ParseArgs("topk", ArgOf(spec), "fraction"));
  if (!o.Has("fraction")) return InvalidArgumentError("codec 'topk' needs a fraction in (0, 1], e.g. topk:0.01");
  TopKCodec::Options opt;
  VERDANT_ASSIGN_OR_RETURN(opt.fraction, o.GetDouble("fraction", 0.0));
  if (!(opt.fraction > 0.0 && opt.fraction <= 1.0)) {
    return InvalidArgumentError("topk fraction must be in (0, 1], got " + o.values().at("fraction"));
  }
  VERDANT_RETURN_IF_ERROR(o.CheckAllUsed("topk"));
  if (spec.Has("next")) {
    VERDANT_ASSIGN_OR_RETURN(opt.values, CreateCodec(spec.values().at("next")));
  }
  VERDANT_ASSIGN_OR_RETURN(auto c, TopKCodec::Create(std::move(opt)));
  return std::unique_ptr<UpdateCodec>(std::move(c));
}

struct BuiltinHelp {
  const char* name;
  const char* syntax;
  const char* help;
};
constexpr BuiltinHelp kBuiltins[] = {
    {"identity", "identity", "float32, 4 bytes/value (no compression)"},
    {"fp16", "fp16", "IEEE half precision (round to nearest even), 2 bytes/value"},
    {"int8", "int8[:chunk=N]", "stochastic 8-bit, one scale per N values (default 1024), ~1 byte/value"},
    {"int4", "int4[:chunk=N]", "stochastic 4-bit, one scale per N values (default 1024), ~0.5 byte/value"},
    {"qsgd", "qsgd:<levels>[,chunk=N]", "QSGD: L2 norm per N values (default 512) + sign + stochastic level, 1 <= levels <= 32767"},
    {"topk", "topk:<fraction>[+<codec>]", "keep the ceil(fraction*n) largest magnitudes, 0 < fraction <= 1, values coded by <codec> (e.g. topk:0.1+int8)"},
};

std::string OneLineValidCodecs() {
  std::string s;
  for (const auto& b : kBuiltins) s += (s.empty() ? "" : ", ") + std::string(b.syntax);
  std::set<std::string> builtin_names;
  for (const auto& b : kBuiltins) builtin_names.insert(b.name);
  for (const auto& name : CodecRegistry().Names()) {
    if (!builtin_names.count(name)) s += ", " + name;
  }
  return s;
}

Status RegisterBuiltins(Registry<UpdateCodec>& reg) {
  VERDANT_RETURN_IF_ERROR(reg.Register("identity", [](const OptionMap& o) -> Result<std::unique_ptr<UpdateCodec>> {
    VERDANT_RETURN_IF_ERROR(NoArgument("identity", o));
    return std::unique_ptr<UpdateCodec>(std::make_unique<IdentityCodec>());
  }));
  VERDANT_RETURN_IF_ERROR(reg.Register("fp16", [](const OptionMap& o) -> Result<std::unique_ptr<UpdateCodec>> {
    VERDANT_RETURN_IF_ERROR(NoArgument("fp16", o));
    return std::unique_ptr<UpdateCodec>(std::make_unique<Fp16Codec>());
  }));
  VERDANT_RETURN_IF_ERROR(reg.Register("int8", [](const OptionMap& o) { return MakeUniform(8, o); }));
  VERDANT_RETURN_IF_ERROR(reg.Register("int4", [](const OptionMap& o) { return MakeUniform(4, o); }));
  VERDANT_RETURN_IF_ERROR(reg.Register("qsgd", [](const OptionMap& o) { return MakeQsgd(o); }));
  VERDANT_RETURN_IF_ERROR(reg.Register("topk", [](const OptionMap& o) { return MakeTopK(o); }));
  return OkStatus();
}

}  // namespace

Registry<UpdateCodec>& CodecRegistry() {
  static Registry<UpdateCodec>* reg = [] {
    auto* r = new Registry<UpdateCodec>("codec");  // intentionally leaked: process lifetime
    RegisterBuiltins(*r).IgnoreError();
    return r;
  }();
  return *reg;
}

Result<std::unique_ptr<UpdateCodec>> CreateCodec(std::string_view spec) {
  const std::string_view trimmed = codec_internal::Trim(spec);
  if (trimmed.empty()) return InvalidArgumentError("empty codec spec; valid codecs: " + OneLineValidCodecs());
  const size_t plus = trimmed.find('+');
  const std::string_view head = codec_internal::Trim(trimmed.substr(0, plus));
  auto [name, arg] = SplitSpec(head);
  OptionMap o;
  if (!arg.empty()) o.Set("arg", arg);
  if (plus != std::string_view::npos) {
    const std::string_view next = codec_internal::Trim(trimmed.substr(plus + 1));
    if (next.empty()) {
      return InvalidArgumentError("codec '" + std::string(spec) + "': nothing after '+'; valid codecs: " +
                                  OneLineValidCodecs());
    }
    o.Set("next", std::string(next));
  }
  if (!CodecRegistry().Contains(name)) {
    return InvalidArgumentError("unknown codec '" + name + "' in '" + std::string(spec) +
                                "'; valid codecs: " + OneLineValidCodecs());
  }
  auto r = CodecRegistry().Create(name, o);
  if (!r.ok()) return r.status().WithContext("codec '" + std::string(spec) + "'");
  return r;
}

std::string DescribeCodecs() {
  std::string s;
  for (const auto& b : kBuiltins) {
    std::string line = "  " + std::string(b.syntax);
    if (line.size() < 30) line.resize(30, ' ');
    s += line + " " + b.help + "\n";
  }
  std::set<std::string> builtin_names;
  for (const auto& b : kBuiltins) builtin_names.insert(b.name);
  for (const auto& name : CodecRegistry().Names()) {
    if (!builtin_names.count(name)) s += "  " + name + " (plug-in)\n";
  }
  s += "Arguments are 'value' or 'key=value' separated by ',', e.g. int8:chunk=512, qsgd:levels=16,chunk=256.\n";
  return s;
}

std::vector<std::string> CodecNamesInSpec(std::string_view spec) {
  std::vector<std::string> out;
  for (const std::string& part : SplitList(spec, '+')) out.push_back(SplitSpec(part).first);
  return out;
}

}  // namespace verdant
