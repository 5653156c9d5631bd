// verdant/core/units.h
//
// Strong types for the physical quantities Verdant accounts (STYLE.md rule
// 13): no bare double carries joules through a public signature.
//   Energy e = Joules(12.5) + KilowattHours(0.001);
//   Emissions c = e * CarbonIntensity::GramsPerKwh(250);   // gCO2e
//   double kwh = e.kwh();
// Thread-safety: value types.
#pragma once

#include <compare>
#include <cstdint>

namespace verdant {

class Energy {
 public:
  constexpr Energy() = default;
  static constexpr Energy Joules(double j) { return Energy(j); }
  static constexpr Energy KilowattHours(double kwh) { return Energy(kwh * 3.6e6); }
  constexpr double joules() const { return j_; }
  constexpr double kwh() const { return j_ / 3.6e6; }
  constexpr Energy operator+(Energy o) const { return Energy(j_ + o.j_); }
  constexpr Energy operator-(Energy o) const { return Energy(j_ - o.j_); }
  constexpr Energy& operator+=(Energy o) { j_ += o.j_; return *this; }
  constexpr Energy operator*(double k) const { return Energy(j_ * k); }
  constexpr auto operator<=>(const Energy&) const = default;

 private:
  constexpr explicit Energy(double j) : j_(j) {}
  double j_ = 0.0;
};

class Power {
 public:
  constexpr Power() = default;
  static constexpr Power Watts(double w) { return Power(w); }
  static constexpr Power Milliwatts(double mw) { return Power(mw / 1000.0); }
  constexpr double watts() const { return w_; }
  // Energy over an interval of `seconds`.
  constexpr Energy Over(double seconds) const { return Energy::Joules(w_ * seconds); }
  constexpr auto operator<=>(const Power&) const = default;

 private:
  constexpr explicit Power(double w) : w_(w) {}
  double w_ = 0.0;
};

class Emissions {
 public:
  constexpr Emissions() = default;
  static constexpr Emissions Grams(double g) { return Emissions(g); }
  constexpr double grams() const { return g_; }
  constexpr double kilograms() const { return g_ / 1000.0; }
  constexpr Emissions operator+(Emissions o) const { return Emissions(g_ + o.g_); }
  constexpr Emissions& operator+=(Emissions o) { g_ += o.g_; return *this; }
  constexpr auto operator<=>(const Emissions&) const = default;

 private:
  constexpr explicit Emissions(double g) : g_(g) {}
  double g_ = 0.0;
};

// Grid carbon intensity in gCO2e per kWh.
class CarbonIntensity {
 public:
  constexpr CarbonIntensity() = default;
  static constexpr CarbonIntensity GramsPerKwh(double g) { return CarbonIntensity(g); }
  constexpr double grams_per_kwh() const { return g_; }
  constexpr auto operator<=>(const CarbonIntensity&) const = default;

 private:
  constexpr explicit CarbonIntensity(double g) : g_(g) {}
  double g_ = 0.0;
};

constexpr Emissions operator*(Energy e, CarbonIntensity ci) {
  return Emissions::Grams(e.kwh() * ci.grams_per_kwh());
}

// A byte count (wire bytes, payload bytes).
struct Bytes {
  uint64_t count = 0;
  constexpr Bytes operator+(Bytes o) const { return Bytes{count + o.count}; }
  constexpr Bytes& operator+=(Bytes o) { count += o.count; return *this; }
  constexpr auto operator<=>(const Bytes&) const = default;
};

}  // namespace verdant
