// Formulas of verdant/energy/energy_model.h against hand computations from
// ENERGY.md (each computation is written out next to its check).
#include "verdant/energy/energy_model.h"

#include <doctest/doctest.h>

#include "verdant/energy/carbon.h"
#include "verdant/energy/device_state.h"
#include "verdant/testing/temp_dir.h"

using namespace verdant;
using namespace verdant::energy;
using doctest::Approx;

TEST_CASE("t_train = 3 * samples * ms_per_sample / 1000") {
  // 600 samples x 0.5 ms: 3 * 600 * 0.5 / 1000 = 0.9 s.
  CHECK(TrainTimeFromSamples(600, Milliseconds(0.5)).count() == Approx(0.9));
  // 60000 samples x 2 ms: 3 * 60000 * 2 / 1000 = 360 s.
  CHECK(TrainTimeFromSamples(60000, Milliseconds(2)).count() == Approx(360.0));
  CHECK(TrainTimeFromSamples(0, Milliseconds(2)).count() == 0.0);
}

TEST_CASE("Radio energy follows Huang et al. P = a_up*r_up + a_down*r_down + b, plus tail") {
  const RadioLinkModel lte = DefaultLinkModel(LinkType::kLte);
  // LTE upload of 10 MB (80 Mbit) at 6 Mbps: t = 80/6 = 13.3333 s;
  // P = 438.39*6 + 1288.04 = 3918.38 mW; E = 3.91838 W * 13.3333 s = 52.2451 J;
  // tail 11.6 s * 1.060 W = 12.296 J; total 64.5411 J.
  CHECK(RadioBurstEnergy(lte, Bytes{10'000'000}, true, DataRate::Mbps(6), false).joules() ==
        Approx(52.2451).epsilon(1e-5));
  CHECK(lte.TailEnergy().joules() == Approx(12.296));
  CHECK(RadioBurstEnergy(lte, Bytes{10'000'000}, true, DataRate::Mbps(6)).joules() ==
        Approx(64.5411).epsilon(1e-5));
  // LTE download of 10 MB at 13 Mbps: t = 80/13 = 6.153846 s;
  // P = 51.97*13 + 1288.04 = 1963.65 mW; E = 12.08400 J (+ tail 12.296 = 24.38000 J).
  CHECK(RadioBurstEnergy(lte, Bytes{10'000'000}, false, DataRate::Mbps(13)).joules() ==
        Approx(24.38000).epsilon(1e-5));
  // WiFi upload of 1 MB (8 Mbit) at 8 Mbps: t = 1 s; P = 283.17*8 + 132.86 = 2398.22 mW -> 2.39822
  // J.
  const RadioLinkModel wifi = DefaultLinkModel(LinkType::kWifi);
  CHECK(RadioBurstEnergy(wifi, Bytes{1'000'000}, true, DataRate::Mbps(8)).joules() ==
        Approx(2.39822));
  // 3G download of 2 MB (16 Mbit) at 2 Mbps: t = 8 s; P = 122.12*2 + 817.88 = 1062.12 mW -> 8.49696
  // J.
  const RadioLinkModel g3 = DefaultLinkModel(LinkType::k3g);
  CHECK(RadioBurstEnergy(g3, Bytes{2'000'000}, false, DataRate::Mbps(2)).joules() ==
        Approx(8.49696));
  // Simultaneous: LTE at 6 up / 13 down: 438.39*6 + 51.97*13 + 1288.04 = 4593.99 mW.
  CHECK(lte.PowerAt(DataRate::Mbps(6), DataRate::Mbps(13)).watts() == Approx(4.59399));
  // No bytes, no energy (and no tail).
  CHECK(RadioBurstEnergy(lte, Bytes{0}, true, DataRate::Mbps(6)).joules() == 0.0);
  // LTE is far less efficient per bit than WiFi at the same rate (ENERGY.md: up to 23x).
  CHECK(RadioBurstEnergy(lte, Bytes{1'000'000}, true, DataRate::Mbps(1)).joules() >
        RadioBurstEnergy(wifi, Bytes{1'000'000}, true, DataRate::Mbps(1)).joules());
}

TEST_CASE("SCI embodied share M = TE * time/lifetime * share") {
  // Phone: 60 kgCO2e over 2 years = 60000 g / 17520 h = 3.4247 g per device-hour
  // (ENERGY.md: ~3.4 gCO2e per device-hour).
  auto p = BuiltinProfile("phone-midrange");
  REQUIRE(p.ok());
  CHECK(EmbodiedShare(p->embodied, Seconds(3600), p->lifetime).grams() ==
        Approx(3.42466).epsilon(1e-4));
  // Half the resources reserved: half of it.
  CHECK(EmbodiedShare(p->embodied, Seconds(3600), p->lifetime, 0.5).grams() ==
        Approx(1.71233).epsilon(1e-4));
  // No lifetime: not amortised.
  CHECK(EmbodiedShare(Emissions::Grams(1000), Seconds(10), Seconds(0)).grams() == 0.0);
}

TEST_CASE("Operational carbon and network energy") {
  // 1 kWh at 250 g/kWh = 250 g; 7200 J = 0.002 kWh at 475 g/kWh = 0.95 g.
  CHECK((Energy::Joules(3.6e6) * CarbonIntensity::GramsPerKwh(250)).grams() == Approx(250.0));
  CHECK((Energy::Joules(7200) * CarbonIntensity::GramsPerKwh(475)).grams() == Approx(0.95));
  // Aslan et al.: 1 GB at 0.006 kWh/GB = 0.006 kWh = 21600 J.
  CHECK(NetworkTransferEnergy(Bytes{1'000'000'000}, 0.006).joules() == Approx(21600.0));
  // WattTime: 1000 lbs/MWh = 453.59237 g/kWh.
  CHECK(FromLbsPerMwh(1000).grams_per_kwh() == Approx(453.59237));
}

TEST_CASE("Built-in profiles are valid and carry ENERGY.md constants") {
  for (const auto& name : BuiltinProfileNames()) {
    auto p = BuiltinProfile(name);
    REQUIRE_MESSAGE(p.ok(), name);
    CHECK_MESSAGE(Validate(*p).ok(), name);
    CHECK(p->name == name);
  }
  auto mid = *BuiltinProfile("phone-midrange");
  CHECK(mid.train_power.watts() == Approx(3.0));
  CHECK(ToWattHours(mid.battery_capacity) == Approx(15.4));
  // EAFL idle drain: 10 % of 15.4 Wh per hour = 1.54 W.
  CHECK(mid.idle_power.watts() == Approx(1.54));
  CHECK(mid.pue == 1.0);
  auto lte = mid.Link(LinkType::kLte);
  REQUIRE(lte.ok());
  CHECK(lte->a_up_mw_per_mbps == Approx(438.39));
  CHECK(lte->tail_time.count() == Approx(11.6));
  CHECK(BuiltinProfile("server-cpu")->train_power.watts() == Approx(85.0));
  CHECK(BuiltinProfile("server-cpu")->pue == Approx(1.56));
  CHECK(BuiltinProfile("server-gpu-t4")->train_power.watts() == Approx(155.0));
  CHECK(BuiltinProfile("phone-flagship")->embodied.grams() == Approx(64000));
  auto unknown = BuiltinProfile("toaster");
  CHECK(unknown.status().code() == StatusCode::kNotFound);
  CHECK(unknown.status().message().find("phone-midrange") != std::string::npos);
  CHECK(mid.Link(LinkType::kEthernet).status().code() == StatusCode::kNotFound);
}

TEST_CASE("ProfileEnergyModel::Estimate sums compute, radio, idle and embodied") {
  auto m = ProfileEnergyModel::Create(*BuiltinProfile("phone-midrange"));
  REQUIRE(m.ok());
  RoundUsage u;
  u.samples_processed = 600;
  u.bytes_up = Bytes{1'000'000};
  u.bytes_down = Bytes{1'000'000};
  u.link = LinkType::kWifi;
  u.up_rate = DataRate::Mbps(8);
  u.down_rate = DataRate::Mbps(16);
  u.wait_time = Seconds(30);
  auto e = (*m)->Estimate(u);
  REQUIRE(e.ok());
  // compute: 3 W * (3*600*0.5/1000 = 0.9 s) = 2.7 J
  CHECK(e->train_time.count() == Approx(0.9));
  CHECK(e->compute.joules() == Approx(2.7));
  // radio: up 1 MB @ 8 Mbps: 1 s * 2398.22 mW = 2.39822 J;
  //        down 1 MB @ 16 Mbps: 0.5 s * (137.01*16 + 132.86 = 2325.02 mW) = 1.16251 J;
  //        total 3.56073 J
  CHECK(e->radio.joules() == Approx(3.56073));
  // idle: 1.54 W * 30 s = 46.2 J
  CHECK(e->idle.joules() == Approx(46.2));
  CHECK(e->DeviceTotal().joules() == Approx(2.7 + 3.56073 + 46.2));
  // reserved 0.9 + 1.5 + 30 = 32.4 s; M = 60000 g * 32.4 / (2 * 31536000 s) = 0.0308219 g
  CHECK(e->reserved_time.count() == Approx(32.4));
  CHECK(e->embodied.grams() == Approx(0.0308219).epsilon(1e-5));
  CHECK(e->method == "model:phone-midrange");
  CHECK(e->network.joules() == 0.0);

  // Measured training time overrides the samples formula.
  u.measured_train_time = Seconds(10);
  CHECK((*m)->Estimate(u)->compute.joules() == Approx(30.0));

  // LTE with default rates (6 up / 13 down) adds one tail per burst.
  RoundUsage l;
  l.bytes_up = Bytes{10'000'000};
  l.bytes_down = Bytes{10'000'000};
  l.link = LinkType::kLte;
  CHECK((*m)->Estimate(l)->radio.joules() == Approx(64.5411 + 24.38000).epsilon(1e-5));
  // A link the phone lacks.
  l.link = LinkType::kEthernet;
  CHECK((*m)->Estimate(l).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("PUE multiplies server energy and network energy is opt-in") {
  ProfileEnergyModelOptions o;
  o.network_kwh_per_gb = 0.006;
  auto m = ProfileEnergyModel::Create(*BuiltinProfile("server-cpu"), o);
  REQUIRE(m.ok());
  RoundUsage u;
  u.measured_train_time = Seconds(10);
  u.bytes_up = Bytes{500'000'000};
  u.bytes_down = Bytes{500'000'000};
  auto e = (*m)->Estimate(u);
  REQUIRE(e.ok());
  // 85 W * 10 s * PUE 1.56 = 1326 J
  CHECK(e->compute.joules() == Approx(1326.0));
  // Ethernet: no device radio energy; network side 1 GB * 0.006 kWh/GB = 21600 J
  CHECK(e->radio.joules() == 0.0);
  CHECK(e->network.joules() == Approx(21600.0));
  CHECK(ProfileEnergyModel::Create(*BuiltinProfile("server-cpu"), {.resource_share = 0})
            .status()
            .code() == StatusCode::kInvalidArgument);
}

TEST_CASE("Device profiles load from TOML with base and overrides and clear errors") {
  auto p = ParseDeviceProfileToml(R"(
name = "pixel-lab"
base = "phone-midrange"
train_power_w = 4.2
ms_per_sample = 0.8
embodied_kg = 70
lifetime_years = 3
default_link = "lte"
[links.lte]
up_mbps = 10
tail_s = 10.0
)");
  REQUIRE_MESSAGE(p.ok(), p.status().ToString());
  CHECK(p->name == "pixel-lab");
  CHECK(p->train_power.watts() == Approx(4.2));
  CHECK(p->idle_power.watts() == Approx(1.54));  // from base
  CHECK(p->ms_per_sample.count() == Approx(0.8));
  CHECK(p->embodied.grams() == Approx(70000));
  CHECK(p->lifetime.count() == Approx(3 * 365 * 24 * 3600.0));
  CHECK(p->default_link == LinkType::kLte);
  CHECK(p->links.at(LinkType::kLte).default_up.mbps() == Approx(10));
  CHECK(p->links.at(LinkType::kLte).a_up_mw_per_mbps == Approx(438.39));  // kept from base
  CHECK(p->links.at(LinkType::kLte).tail_time.count() == Approx(10.0));

  auto typo = ParseDeviceProfileToml("name = \"x\"\ntrain_powr_w = 3\n");
  CHECK(typo.status().code() == StatusCode::kInvalidArgument);
  CHECK(typo.status().message().find("train_powr_w") != std::string::npos);
  auto syntax = ParseDeviceProfileToml("name = \"x\"\ntrain_power_w = = 3\n", "bad.toml");
  CHECK(syntax.status().code() == StatusCode::kInvalidArgument);
  CHECK(syntax.status().message().find("bad.toml:2") != std::string::npos);
  auto wrong_type = ParseDeviceProfileToml("name = \"x\"\ntrain_power_w = \"three\"\n");
  CHECK(wrong_type.status().message().find("must be a number") != std::string::npos);
  auto invalid = ParseDeviceProfileToml("name = \"x\"\npue = 0.5\n");
  CHECK(invalid.status().message().find("pue") != std::string::npos);

  testing::TempDir dir;
  testing::WriteFile(dir.path() / "fleet.toml", R"(
[profiles.cheap]
base = "phone-midrange"
train_power_w = 2.0
[profiles.lab-server]
base = "server-cpu"
pue = 1.2
)");
  auto all = LoadDeviceProfiles(dir.path() / "fleet.toml");
  REQUIRE_MESSAGE(all.ok(), all.status().ToString());
  REQUIRE(all->size() == 2);
  CHECK((*all)[0].name == "cheap");
  CHECK((*all)[1].pue == Approx(1.2));
  CHECK(LoadDeviceProfiles(dir.path() / "missing.toml").status().code() == StatusCode::kNotFound);
}

TEST_CASE("EnergyModel registry creates profile models by name") {
  Registry<EnergyModel> reg("energy model");
  REQUIRE(RegisterBuiltinEnergyModels(reg).ok());
  auto m = reg.Create("profile", OptionMap{{"profile", "laptop"}});
  REQUIRE(m.ok());
  CHECK((*m)->Name() == "model:laptop");
  CHECK(reg.Create("profile", OptionMap{{"profil", "laptop"}}).status().code() ==
        StatusCode::kInvalidArgument);
}
