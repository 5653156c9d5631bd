// The simulator: the real coordinator on virtual time over a replayed fleet.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "verdant/client/model_zoo.h"
#include "verdant/energy/carbon.h"
#include "verdant/simulations/fleet.h"
#include "verdant/simulations/fleet_generator.h"
#include "verdant/simulations/report.h"
#include "verdant/simulations/simulator.h"
#include "verdant/testing/temp_dir.h"
#include "verdant/transport/message.h"

using namespace verdant;
using namespace verdant::sim;
using namespace std::chrono_literals;

namespace {

std::vector<std::vector<std::string>> Csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ls(line);
    std::string x;
    while (std::getline(ls, x, ',')) f.push_back(x);
    if (!line.empty() && line.back() == ',') f.push_back("");
    rows.push_back(std::move(f));
  }
  return rows;
}

size_t Col(const std::vector<std::string>& header, const std::string& name) {
  for (size_t i = 0; i < header.size(); ++i) {
    if (header[i] == name) return i;
  }
  FAIL("no column " << name);
  return 0;
}

const energy::CarbonIntensitySource& Traces() {
  static auto* t = [] {
    auto s = energy::TraceIntensitySource::LoadDirectory(VERDANT_SOURCE_DIR "/data/carbon", energy::EmissionScope::kDirect);
    REQUIRE_MESSAGE(s.ok(), s.status().ToString());
    return s->release();
  }();
  return *t;
}

// Four devices: d-fast and d-slow always available; d-leaves becomes
// unavailable 3 s into round 1 (it needs 9 s to train); d-low is on
// battery at 5 %, the default floor.
Fleet HandMadeFleet() {
  auto f = ParseDevicesCsv(
      "device_id,profile,zone,battery_wh,ms_per_sample,up_kbps,down_kbps,embodied_kg,num_examples\n"
      "d-fast,phone-flagship,NO,19,0.25,8000,8000,64,400\n"
      "d-slow,phone-midrange,US-AZPS,15,2.0,1000,2000,60,500\n"
      "d-leaves,phone-midrange,ES,15,10.0,2000,2000,60,300\n"
      "d-low,phone-midrange,ES,15,1.0,2000,2000,60,300\n");
  REQUIRE(f.ok());
  Status st = ParseEventsCsv(
      "time,device_id,kind,value\n"
      "2022-06-01T00:00:00Z,d-fast,available,\n"
      "2022-06-01T00:00:00Z,d-fast,charging_on,\n"
      "2022-06-01T00:00:00Z,d-slow,available,\n"
      "2022-06-01T00:00:00Z,d-slow,charging_on,\n"
      "2022-06-01T00:00:00Z,d-leaves,available,\n"
      "2022-06-01T00:00:00Z,d-leaves,charging_on,\n"
      "2022-06-01T00:00:03Z,d-leaves,unavailable,\n"
      "2022-06-01T00:00:00Z,d-low,available,\n"
      "2022-06-01T00:00:00Z,d-low,battery,5.0\n",
      *f);
  REQUIRE(st.ok());
  return std::move(*f);
}

SimulationOptions SmallOptions(const std::string& out) {
  SimulationOptions o;
  o.model = "synthetic:20000";
  o.clients_per_round = 4;
  o.rounds = 3;
  o.round_interval = 10min;
  o.intensity = &Traces();
  o.out_dir = out;
  return o;
}

}  // namespace

TEST_CASE("rounds take the virtual time of their slowest client and dropouts are failures with reasons") {
  testing::TempDir dir;
  const Fleet fleet = HandMadeFleet();
  auto r = RunSimulation(fleet, SmallOptions(dir.path().string()));
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  CHECK(r->rounds == 3);
  CHECK(r->dropouts_unavailable == 1);  // d-leaves, round 1
  CHECK(r->dropouts_battery >= 1);      // d-low
  auto clients = Csv(testing::ReadFile(dir.path() / "clients.csv"));
  const auto& h = clients[0];
  bool saw_leave = false, saw_battery = false;
  double slow_train = 0;
  for (size_t i = 1; i < clients.size(); ++i) {
    const auto& c = clients[i];
    const std::string id = c[Col(h, "client_id")];
    if (id == "d-leaves" && c[0] == "1") {
      CHECK(c[Col(h, "status")] == "failed");
      CHECK(c[Col(h, "reason")].find("became unavailable") != std::string::npos);
      saw_leave = true;
    }
    if (id == "d-low") {
      CHECK(c[Col(h, "status")] == "failed");
      CHECK(c[Col(h, "reason")].find("battery would fall") != std::string::npos);
      saw_battery = true;
    }
    if (id == "d-slow") {
      CHECK(c[Col(h, "status")] == "completed");
      slow_train = std::stod(c[Col(h, "train_seconds")]);
      CHECK(c[Col(h, "energy_method")] == "model:phone-midrange/d-slow");
      CHECK(c[Col(h, "zone")] == "US-AZPS");
    }
  }
  CHECK(saw_leave);
  CHECK(saw_battery);
  // t_train = 3 x 500 samples x 2 ms.
  CHECK(slow_train == doctest::Approx(3.0));
  // Round 1 lasts as long as d-slow: 80 kB down at 2 Mbit/s + 3 s + 80 kB up at 1 Mbit/s.
  auto sim = Csv(testing::ReadFile(dir.path() / "simulation.csv"));
  REQUIRE(sim.size() == 4);
  const double d1 = std::stod(sim[1][Col(sim[0], "virtual_seconds")]);
  CHECK(d1 == doctest::Approx(80000 * 8 / 2e6 + 3.0 + 80000 * 8 / 1e6).epsilon(0.01));
  // Rounds start every 10 virtual minutes (each is shorter than that).
  CHECK(sim[1][Col(sim[0], "virtual_start_utc")] == "2022-06-01T00:00:00Z");
  CHECK(sim[2][Col(sim[0], "virtual_start_utc")] == "2022-06-01T00:10:00Z");
  auto rounds = Csv(testing::ReadFile(dir.path() / "rounds.csv"));
  REQUIRE(rounds.size() == 4);
  CHECK(rounds[3][Col(rounds[0], "started_utc")] == "2022-06-01T00:20:00Z");
  // The intensity of a client-round is its zone's trace hour at virtual time.
  const std::string json = testing::ReadFile(dir.path() / "summary.json");
  CHECK(json.find("\"simulation\"") != std::string::npos);
  CHECK(json.find("\"dropouts_battery\"") != std::string::npos);
  CHECK(r->summary.numbers.at("emissions_g") > 0);
}

namespace {

// What a completed client's upload costs on the wire: its TrainResult and
// the payload's Chunk envelopes as protobuf serialises them, plus a 4-byte
// frame header each.
uint64_t UploadWireBytes(uint64_t round, uint64_t task_id, uint64_t examples, double train_loss,
                         double train_seconds, const std::string& codec, const std::string& model,
                         uint64_t payload_bytes) {
  auto layout = ModelLayout(model);
  REQUIRE(layout.ok());
  wire::Envelope env;
  auto* r = env.mutable_train_result();
  r->set_round(round);
  r->set_task_id(task_id);
  r->set_num_examples(examples);
  r->set_train_loss(train_loss);
  r->set_train_seconds(train_seconds);
  auto* p = r->mutable_payload();
  p->set_stream_id(task_id);
  p->set_encoding(codec);
  p->set_num_params(layout->NumParameters());
  p->set_layout_fingerprint(layout->Fingerprint());
  p->set_payload_bytes(payload_bytes);
  const ByteBuffer payload(payload_bytes);
  const auto chunks = MakeChunkMessages(task_id, payload);
  p->set_num_chunks(static_cast<uint32_t>(chunks.size()));
  uint64_t total = env.ByteSizeLong() + 4;
  for (const auto& c : chunks) total += c->size() + 4;
  return total;
}

}  // namespace

TEST_CASE("an upload is counted as its serialised TrainResult and Chunk envelopes plus a frame header each") {
  testing::TempDir dir;
  auto f = ParseDevicesCsv(
      "device_id,profile,zone,battery_wh,ms_per_sample,up_kbps,down_kbps,embodied_kg,num_examples\n"
      "d-only,phone-flagship,NO,19,0.25,80000,80000,64,400\n");
  REQUIRE(f.ok());
  REQUIRE(ParseEventsCsv("time,device_id,kind,value\n"
                         "2022-06-01T00:00:00Z,d-only,available,\n"
                         "2022-06-01T00:00:00Z,d-only,charging_on,\n",
                         *f)
              .ok());
  SimulationOptions o = SmallOptions(dir.path().string());
  // 1,200,000 bytes of identity payload: a full 1 MiB chunk and a partial one.
  o.model = "synthetic:300000";
  o.clients_per_round = 1;
  o.rounds = 2;
  auto r = RunSimulation(*f, o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  auto clients = Csv(testing::ReadFile(dir.path() / "clients.csv"));
  REQUIRE(clients.size() == 3);
  const auto& h = clients[0];
  for (size_t i = 1; i < clients.size(); ++i) {
    const auto& c = clients[i];
    REQUIRE(c[Col(h, "status")] == "completed");
    const uint64_t round = std::stoull(c[Col(h, "round")]);
    // One device, one task per round: task ids (and upload stream ids) 1, 2.
    CHECK(std::stoull(c[Col(h, "bytes_up")]) ==
          UploadWireBytes(round, round, 400, 0.0, std::stod(c[Col(h, "train_seconds")]), "identity",
                          "synthetic:300000", 300000 * sizeof(float)));
  }
}

TEST_CASE("a device past the round timeout fails with the deadline and the round ends at the timeout") {
  testing::TempDir dir;
  Fleet fleet = HandMadeFleet();
  fleet.devices[1].ms_per_sample = 2000;  // d-slow: 3000 s of training
  SimulationOptions o = SmallOptions(dir.path().string());
  o.rounds = 1;
  o.round_timeout = 5min;
  auto r = RunSimulation(fleet, o);
  REQUIRE(r.ok());
  CHECK(r->dropouts_deadline == 1);
  auto sim = Csv(testing::ReadFile(dir.path() / "simulation.csv"));
  CHECK(std::stod(sim[1][Col(sim[0], "virtual_seconds")]) == doctest::Approx(300));
}

namespace {

std::string Mask(const std::string& csv, const std::vector<std::string>& columns) {
  auto rows = Csv(csv);
  std::string out;
  std::vector<size_t> idx;
  for (const auto& c : columns) idx.push_back(Col(rows[0], c));
  for (size_t i = 0; i < rows.size(); ++i) {
    for (size_t j = 0; j < rows[i].size(); ++j) {
      const bool masked = i > 0 && std::find(idx.begin(), idx.end(), j) != idx.end();
      out += (j ? "," : "") + (masked ? std::string("*") : rows[i][j]);
    }
    out += "\n";
  }
  return out;
}

Fleet Generated(uint64_t devices, uint32_t days, std::vector<std::string> zones) {
  FleetGeneratorOptions g;
  g.devices = devices;
  g.days = days;
  g.zones = std::move(zones);
  g.seed = 3;
  auto f = GenerateFleet(g, VERDANT_SOURCE_DIR "/data/devices");
  REQUIRE(f.ok());
  return std::move(*f);
}

// The outputs of two runs in `a` and `b` are byte-identical, but for what
// measures the host (rounds.csv's wall-clock columns, summary.json's host keys).
void CheckSameOutputs(const std::filesystem::path& a, const std::filesystem::path& b) {
  for (const char* f : {"clients.csv", "simulation.csv", "emissions.csv"}) {
    CHECK_MESSAGE(testing::ReadFile(a / f) == testing::ReadFile(b / f), f);
  }
  const std::vector<std::string> wall = {"wall_seconds", "eval_seconds"};
  CHECK(Mask(testing::ReadFile(a / "rounds.csv"), wall) == Mask(testing::ReadFile(b / "rounds.csv"), wall));
  auto host_free = [](const std::filesystem::path& p) {
    auto j = nlohmann::ordered_json::parse(testing::ReadFile(p));
    for (const char* k : {"wall_seconds", "coordinator_cpu_seconds", "coordinator_rounds_cpu_seconds",
                          "coordinator_peak_rss_mb"}) {
      REQUIRE(j.contains(k));
      j.erase(k);
    }
    return j.dump(2);
  };
  CHECK(host_free(a / "summary.json") == host_free(b / "summary.json"));
}

}  // namespace

TEST_CASE("the same fleet and seed give byte-identical outputs") {
  testing::TempDir dir;
  const Fleet fleet = Generated(60, 1, {"US-CISO", "NO", "US-AZPS"});
  for (const char* run : {"a", "b"}) {
    SimulationOptions o = SmallOptions((dir.path() / run).string());
    o.selector = "carbon";
    o.clients_per_round = 8;
    o.rounds = 24;
    o.uplink_codec = "int8";
    auto r = RunSimulation(fleet, o);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  }
  CheckSameOutputs(dir.path() / "a", dir.path() / "b");
  CHECK(testing::ReadFile(dir.path() / "a" / "clients.csv").size() > 1000);
}

TEST_CASE("on the same fleet the carbon-aware selector emits less than random") {
  const Fleet fleet = Generated(80, 1, {"NO", "US-AZPS", "US-MISO", "ES"});
  auto run = [&](const std::string& selector) {
    SimulationOptions o = SmallOptions("");
    o.selector = selector;
    o.clients_per_round = 8;
    o.rounds = 36;
    auto r = RunSimulation(fleet, o);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    CHECK(r->client_rounds > 0);
    return r->summary.numbers.at("emissions_g");
  };
  const double random_g = run("random");
  const double carbon_g = run("carbon");
  MESSAGE("random " << random_g << " g, carbon " << carbon_g << " g");
  CHECK(carbon_g < 0.5 * random_g);
}

TEST_CASE("a deferral advances virtual time instead of waiting") {
  testing::TempDir dir;
  const Fleet fleet = Generated(30, 2, {"US-CISO"});  // solar: cleaner around local noon
  SimulationOptions o = SmallOptions(dir.path().string());
  o.selector = "carbon-deferral";
  o.selector_options = OptionMap{{"max_delay_h", "12"}, {"window_h", "12"}};
  o.max_defer = 12h;
  o.start = energy::ParseUtcTimestamp("2022-06-01T04:00:00Z").value();  // 20:00 local, dirty evening
  o.rounds = 2;
  const auto t0 = std::chrono::steady_clock::now();
  auto r = RunSimulation(fleet, o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  CHECK(std::chrono::steady_clock::now() - t0 < 60s);
  CHECK(r->deferrals >= 1);
  auto rounds = Csv(testing::ReadFile(dir.path() / "rounds.csv"));
  CHECK(std::stod(rounds[1][Col(rounds[0], "deferred_seconds")]) > 0);
  // Virtual time runs from the start, deferral included.
  CHECK(r->virtual_seconds > 3600);
  auto sim = Csv(testing::ReadFile(dir.path() / "simulation.csv"));
  CHECK(sim[1][Col(sim[0], "virtual_start_utc")] != "2022-06-01T04:00:00Z");
}

TEST_CASE("bad simulation input is an error naming it") {
  Fleet fleet = HandMadeFleet();
  fleet.devices[0].profile = "toaster";
  auto r = RunSimulation(fleet, SmallOptions(""));
  REQUIRE(!r.ok());
  CHECK(r.status().message().find("device 'd-fast': unknown profile 'toaster'") != std::string::npos);
  SimulationOptions o = SmallOptions("");
  o.intensity = nullptr;
  CHECK(RunSimulation(HandMadeFleet(), o).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("report.html and comparison.csv summarise the runs from their folders") {
  testing::TempDir dir;
  const Fleet fleet = Generated(40, 1, {"NO", "US-AZPS"});
  std::vector<ReportRun> runs;
  for (const char* sel : {"random", "carbon"}) {
    SimulationOptions o = SmallOptions((dir.path() / sel).string());
    o.selector = sel;
    o.clients_per_round = 5;
    o.rounds = 12;
    REQUIRE(RunSimulation(fleet, o).ok());
    runs.push_back({sel, dir.path() / sel});
  }
  auto random = ReadRunTotals(runs[0]);
  auto carbon = ReadRunTotals(runs[1]);
  REQUIRE(random.ok());
  REQUIRE(carbon.ok());
  CHECK(random->rounds == 12);
  CHECK(random->client_rounds == random->completed + random->failed);
  CHECK(carbon->operational_g < random->operational_g);
  CHECK(carbon->mean_intensity < random->mean_intensity);
  REQUIRE(WriteComparisonCsv({*random, *carbon}, dir.path() / "comparison.csv").ok());
  auto table = Csv(testing::ReadFile(dir.path() / "comparison.csv"));
  REQUIRE(table.size() == 3);
  CHECK(table[2][0] == "carbon");
  CHECK(std::stod(table[1][Col(table[0], "total_g")]) ==
        doctest::Approx(random->operational_g + random->embodied_g).epsilon(1e-3));
  REQUIRE(WriteHtmlReport(runs, &Traces(), dir.path() / "report.html").ok());
  const std::string html = testing::ReadFile(dir.path() / "report.html");
  for (const char* want : {"Cumulative gCO2e", "gCO2e by component", "zone average", "Client-rounds per device",
                           "US-AZPS", "carbon (at selection)"}) {
    CHECK_MESSAGE(html.find(want) != std::string::npos, want);
  }
  CHECK(html.find("<script") == std::string::npos);
  CHECK(!WriteHtmlReport({{"missing", dir.path() / "nope"}}, nullptr, dir.path() / "r2.html").ok());
}

// The --train tests need Debian's dataset-fashion-mnist (or VERDANT_DATA_DIR).
static bool FashionMnistAvailable() {
  if (std::filesystem::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz") ||
      std::getenv("VERDANT_DATA_DIR") != nullptr) {
    return true;
  }
  MESSAGE("Fashion-MNIST not installed: skipped");
  return false;
}

TEST_CASE("--train mode trains each selected device on its Dirichlet shard and reports accuracy") {
  if (!FashionMnistAvailable()) return;
  testing::TempDir dir;
  const Fleet fleet = Generated(30, 1, {"NO", "ES"});
  SimulationOptions o = SmallOptions(dir.path().string());
  o.model = "mlp";
  o.train = true;
  o.eval_examples = 1000;
  o.clients_per_round = 5;
  o.rounds = 4;
  o.uplink_codec = "int8";
  auto r = RunSimulation(fleet, o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  auto rounds = Csv(testing::ReadFile(dir.path() / "rounds.csv"));
  REQUIRE(rounds.size() == 5);
  const double acc1 = std::stod(rounds[1][Col(rounds[0], "accuracy")]);
  const double acc4 = std::stod(rounds[4][Col(rounds[0], "accuracy")]);
  MESSAGE("accuracy after round 1: " << acc1 << ", after round 4: " << acc4);
  CHECK(acc4 > 0.3);  // 10 classes: chance is 0.1
  CHECK(r->summary.final_accuracy == doctest::Approx(acc4));
  // The clients report real training losses and shard sizes.
  auto clients = Csv(testing::ReadFile(dir.path() / "clients.csv"));
  bool loss_seen = false;
  for (size_t i = 1; i < clients.size(); ++i) {
    if (clients[i][Col(clients[0], "status")] == "completed") {
      loss_seen |= std::stod(clients[i][Col(clients[0], "train_loss")]) > 0;
      CHECK(std::stoul(clients[i][Col(clients[0], "num_examples")]) > 0);
    }
  }
  CHECK(loss_seen);
  SimulationOptions bad = o;
  bad.downlink_codec = "fp16";
  CHECK(RunSimulation(fleet, bad).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("--train mode: devices training from the shared broadcast give the outputs of devices that copy it") {
  if (!FashionMnistAvailable()) return;
  testing::TempDir dir;
  const Fleet fleet = Generated(30, 1, {"NO", "ES"});
  // mlp's model is one 1 MiB chunk, cnn's (6.6 MB) seven.
  for (const char* model : {"mlp", "cnn"}) {
    CAPTURE(model);
    const std::filesystem::path base = dir.path() / model;
    for (const bool share : {true, false}) {
      SimulationOptions o = SmallOptions((base / (share ? "shared" : "copied")).string());
      o.model = model;
      o.train = true;
      o.eval_examples = 200;
      o.clients_per_round = 4;
      o.rounds = 3;
      o.strategy_options.Set("max_examples", "48");
      o.share_broadcast = share;
      auto r = RunSimulation(fleet, o);
      REQUIRE_MESSAGE(r.ok(), r.status().ToString());
      CHECK(r->completed > 6);
    }
    CheckSameOutputs(base / "shared", base / "copied");
  }
}

TEST_CASE("--train mode: the same fleet and seed give byte-identical outputs") {
  if (!FashionMnistAvailable()) return;
  testing::TempDir dir;
  const Fleet fleet = Generated(30, 1, {"NO", "ES"});
  for (const char* run : {"a", "b"}) {
    SimulationOptions o = SmallOptions((dir.path() / run).string());
    o.model = "mlp";
    o.train = true;
    o.eval_examples = 500;
    o.clients_per_round = 5;
    o.rounds = 3;
    auto r = RunSimulation(fleet, o);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    CHECK(r->completed > 0);
  }
  CheckSameOutputs(dir.path() / "a", dir.path() / "b");
}
