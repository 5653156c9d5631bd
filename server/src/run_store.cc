#include "verdant/server/run_store.h"

#include <fcntl.h>
#include <sodium.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "verdant/core/state_io.h"

namespace verdant {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kCheckpointMagic = "VCKP";
constexpr uint32_t kCheckpointVersion = 1;
constexpr size_t kHashBytes = 32;
constexpr const char* kSchemaVersion = "1";

std::string Blake2b(std::string_view bytes) {
  unsigned char h[kHashBytes];
  crypto_generichash(h, sizeof h, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), nullptr, 0);
  return std::string(reinterpret_cast<const char*>(h), sizeof h);
}

std::string Hex(std::string_view bytes) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (unsigned char c : bytes) {
    s += d[c >> 4];
    s += d[c & 15];
  }
  return s;
}

std::string CheckpointName(uint64_t round) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "checkpoint-%06llu.bin", static_cast<unsigned long long>(round));
  return buf;
}

Status Errno(const std::string& what) { return UnavailableError(what + ": " + std::strerror(errno)); }

// Writes `bytes` to dir/name durably: temporary file, fsync, rename, fsync
// of the folder.
Status WriteFileDurably(const fs::path& dir, const std::string& name, std::string_view bytes) {
  const fs::path tmp = dir / (name + ".tmp");
  const fs::path dst = dir / name;
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("cannot create " + tmp.string());
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + off, bytes.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      Status st = Errno("cannot write " + tmp.string());
      ::close(fd);
      return st;
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    Status st = Errno("fsync " + tmp.string());
    ::close(fd);
    return st;
  }
  if (::close(fd) != 0) return Errno("close " + tmp.string());
  if (::rename(tmp.c_str(), dst.c_str()) != 0) return Errno("rename to " + dst.string());
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return Errno("cannot open " + dir.string());
  int rc = ::fsync(dfd);
  ::close(dfd);
  if (rc != 0) return Errno("fsync " + dir.string());
  return OkStatus();
}

// ---- SQLite helpers -----------------------------------------------------------

struct StmtDeleter {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using Stmt = std::unique_ptr<sqlite3_stmt, StmtDeleter>;

Status SqlError(sqlite3* db, const std::string& what) {
  const int code = sqlite3_errcode(db);
  std::string msg = what + ": " + sqlite3_errmsg(db);
  if (code == SQLITE_NOTADB || code == SQLITE_CORRUPT) return DataLossError(msg);
  return UnavailableError(msg);
}

Result<Stmt> Prepare(sqlite3* db, const char* sql) {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &s, nullptr) != SQLITE_OK) return SqlError(db, "run.db");
  return Stmt(s);
}

void BindText(sqlite3_stmt* s, int i, const std::string& v) {
  sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
}
void BindU64(sqlite3_stmt* s, int i, uint64_t v) { sqlite3_bind_int64(s, i, static_cast<sqlite3_int64>(v)); }
std::string ColText(sqlite3_stmt* s, int i) {
  const unsigned char* t = sqlite3_column_text(s, i);
  return t == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(t),
                                                    static_cast<size_t>(sqlite3_column_bytes(s, i)));
}
uint64_t ColU64(sqlite3_stmt* s, int i) { return static_cast<uint64_t>(sqlite3_column_int64(s, i)); }

// Strategy metrics as "k=v" lines (%.17g: exact round trip).
std::string EncodeMetrics(const std::map<std::string, double>& m) {
  std::string out;
  char buf[64];
  for (const auto& [k, v] : m) {
    std::snprintf(buf, sizeof buf, "%.17g", v);
    out += k + "=" + buf + "\n";
  }
  return out;
}
std::map<std::string, double> DecodeMetrics(const std::string& s) {
  std::map<std::string, double> m;
  std::istringstream in(s);
  std::string line;
  while (std::getline(in, line)) {
    auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    m[line.substr(0, eq)] = std::strtod(line.c_str() + eq + 1, nullptr);
  }
  return m;
}

std::map<std::string, std::string> ParseFingerprint(const std::string& s) {
  std::map<std::string, std::string> m;
  std::istringstream in(s);
  std::string line;
  while (std::getline(in, line)) {
    auto eq = line.find('=');
    if (eq != std::string::npos) m[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return m;
}

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds(
  round INTEGER PRIMARY KEY, selected INTEGER, completed INTEGER, failed INTEGER,
  accuracy REAL, loss REAL, bytes_up INTEGER, bytes_down INTEGER, wall_seconds REAL,
  train_loss REAL, eval_seconds REAL, started_utc TEXT, model_updated INTEGER,
  energy_joules REAL, emissions_g REAL, embodied_g REAL, deferred_seconds REAL, metrics TEXT);
CREATE TABLE IF NOT EXISTS client_rounds(
  round INTEGER NOT NULL, seq INTEGER NOT NULL, client_id TEXT NOT NULL, status TEXT, reason TEXT,
  num_examples INTEGER, train_loss REAL, train_seconds REAL, bytes_up INTEGER, bytes_down INTEGER,
  zone TEXT, time_utc TEXT, compute_joules REAL, radio_joules REAL, idle_joules REAL,
  intensity_g_per_kwh REAL, emissions_g REAL, embodied_g REAL, energy_method TEXT, codec TEXT,
  ledger INTEGER NOT NULL, l_zone TEXT, l_time_us INTEGER, l_wall_start_us INTEGER, l_duration_us INTEGER,
  l_compute_j REAL, l_radio_j REAL, l_idle_j REAL, l_bytes_up INTEGER, l_bytes_down INTEGER,
  l_intensity REAL, l_intensity_source TEXT, l_intensity_kind INTEGER, l_intensity_scope INTEGER,
  l_emissions_g REAL, l_embodied_g REAL, l_energy_method TEXT, l_codec TEXT, l_samples INTEGER,
  PRIMARY KEY(round, seq));
CREATE TABLE IF NOT EXISTS clients(
  client_id TEXT PRIMARY KEY, rounds_selected INTEGER, rounds_completed INTEGER, rounds_failed INTEGER,
  last_train_seconds REAL, last_train_loss REAL, last_round_selected INTEGER);
)sql";

}  // namespace

// ---- checkpoint file ------------------------------------------------------------

std::string EncodeCheckpoint(const CoordinatorCheckpoint& c) {
  StateWriter w;
  w.Raw(kCheckpointMagic);
  w.U64(kCheckpointVersion);
  w.U64(c.round);
  w.U64(c.model_version);
  w.U64(c.layout_fingerprint);
  w.Floats(c.global);
  w.Floats(c.broadcast);
  w.U64(c.broadcast_version);
  w.String(c.strategy_state);
  w.String(c.selector_state);
  w.U64(c.rng.seed);
  for (uint64_t s : c.rng.s) w.U64(s);
  w.U64(c.rng.has_spare_normal ? 1 : 0);
  w.F64(c.rng.spare_normal);
  w.U64(c.next_task_id);
  w.I64(c.grid_offset_us);
  std::string out = w.Take();
  out += Blake2b(out);
  return out;
}

Result<CoordinatorCheckpoint> DecodeCheckpoint(std::string_view bytes) {
  if (bytes.size() < kCheckpointMagic.size() + 8 + kHashBytes || bytes.substr(0, kCheckpointMagic.size()) != kCheckpointMagic) {
    return DataLossError("not a Verdant checkpoint (bad magic or too short)");
  }
  const std::string_view body = bytes.substr(0, bytes.size() - kHashBytes);
  if (Blake2b(body) != bytes.substr(bytes.size() - kHashBytes)) {
    return DataLossError("checkpoint checksum mismatch (the file is corrupt or truncated)");
  }
  StateReader r(body.substr(kCheckpointMagic.size()), "checkpoint");
  uint64_t version = 0;
  VERDANT_RETURN_IF_ERROR(r.U64(version));
  if (version != kCheckpointVersion) {
    return DataLossError("checkpoint format version " + std::to_string(version) + ", this build reads " +
                         std::to_string(kCheckpointVersion));
  }
  CoordinatorCheckpoint c;
  uint64_t spare = 0;
  VERDANT_RETURN_IF_ERROR(r.U64(c.round));
  VERDANT_RETURN_IF_ERROR(r.U64(c.model_version));
  VERDANT_RETURN_IF_ERROR(r.U64(c.layout_fingerprint));
  VERDANT_RETURN_IF_ERROR(r.Floats(c.global));
  VERDANT_RETURN_IF_ERROR(r.Floats(c.broadcast));
  VERDANT_RETURN_IF_ERROR(r.U64(c.broadcast_version));
  VERDANT_RETURN_IF_ERROR(r.String(c.strategy_state));
  VERDANT_RETURN_IF_ERROR(r.String(c.selector_state));
  VERDANT_RETURN_IF_ERROR(r.U64(c.rng.seed));
  for (uint64_t& s : c.rng.s) VERDANT_RETURN_IF_ERROR(r.U64(s));
  VERDANT_RETURN_IF_ERROR(r.U64(spare));
  c.rng.has_spare_normal = spare != 0;
  VERDANT_RETURN_IF_ERROR(r.F64(c.rng.spare_normal));
  VERDANT_RETURN_IF_ERROR(r.U64(c.next_task_id));
  VERDANT_RETURN_IF_ERROR(r.I64(c.grid_offset_us));
  VERDANT_RETURN_IF_ERROR(r.ExpectEnd());
  return c;
}

// ---- RunStore -------------------------------------------------------------------

RunStore::~RunStore() {
  if (db_ != nullptr) sqlite3_close(db_);
}

Status RunStore::Exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err != nullptr ? err : "unknown error";
    sqlite3_free(err);
    const int code = sqlite3_errcode(db_);
    if (code == SQLITE_NOTADB || code == SQLITE_CORRUPT) {
      return DataLossError((dir_ / kDatabaseFile).string() + " is not a usable run database: " + msg);
    }
    return UnavailableError((dir_ / kDatabaseFile).string() + ": " + msg);
  }
  return OkStatus();
}

Status RunStore::Init(const fs::path& dir) {
  dir_ = dir;
  const fs::path db = dir / kDatabaseFile;
  if (sqlite3_open_v2(db.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) != SQLITE_OK) {
    return SqlError(db_, "cannot open " + db.string());
  }
  sqlite3_busy_timeout(db_, 5000);
  VERDANT_RETURN_IF_ERROR(Exec("PRAGMA journal_mode=WAL"));
  VERDANT_RETURN_IF_ERROR(Exec("PRAGMA synchronous=FULL"));
  return Exec(kSchema);
}

Result<std::unique_ptr<RunStore>> RunStore::Create(const fs::path& dir, const std::string& fingerprint,
                                                   bool replace_existing) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return UnavailableError("cannot create output folder " + dir.string() + ": " + ec.message());
  if (fs::exists(dir / kDatabaseFile)) {
    // A database without a committed checkpoint is a start that died
    // before its first commit: nothing to keep.
    if (!replace_existing && HoldsRun(dir)) {
      return Status(StatusCode::kAlreadyExists,
                    dir.string() + " already holds a run (" + kDatabaseFile +
                        "): continue it with --resume " + dir.string() + ", or choose another output folder");
    }
    for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(dir / (std::string(kDatabaseFile) + suffix), ec);
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("checkpoint-", 0) == 0) fs::remove(entry.path(), ec);
    }
  }
  std::unique_ptr<RunStore> s(new RunStore());
  VERDANT_RETURN_IF_ERROR(s->Init(dir));
  VERDANT_RETURN_IF_ERROR(s->Exec("BEGIN"));
  {
    VERDANT_ASSIGN_OR_RETURN(Stmt st, Prepare(s->db_, "INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)"));
    for (const auto& [k, v] : std::map<std::string, std::string>{
             {"schema_version", kSchemaVersion}, {"fingerprint", fingerprint}, {"last_round", "0"}}) {
      BindText(st.get(), 1, k);
      BindText(st.get(), 2, v);
      if (sqlite3_step(st.get()) != SQLITE_DONE) return SqlError(s->db_, "run.db meta");
      sqlite3_reset(st.get());
    }
  }
  VERDANT_RETURN_IF_ERROR(s->Exec("COMMIT"));
  return s;
}

Result<std::unique_ptr<RunStore>> RunStore::Open(const fs::path& dir, const std::string& fingerprint) {
  if (!fs::is_directory(dir)) return NotFoundError("run folder " + dir.string() + " does not exist");
  if (!fs::exists(dir / kDatabaseFile)) {
    return NotFoundError(dir.string() + " holds no run to resume (no " + kDatabaseFile + ")");
  }
  std::unique_ptr<RunStore> s(new RunStore());
  s->dir_ = dir;
  const fs::path db = dir / kDatabaseFile;
  if (sqlite3_open_v2(db.c_str(), &s->db_, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    return SqlError(s->db_, "cannot open " + db.string());
  }
  sqlite3_busy_timeout(s->db_, 5000);
  VERDANT_RETURN_IF_ERROR(s->Exec("PRAGMA journal_mode=WAL"));
  VERDANT_RETURN_IF_ERROR(s->Exec("PRAGMA synchronous=FULL"));
  std::map<std::string, std::string> meta;
  {
    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v2(s->db_, "SELECT key, value FROM meta", -1, &raw, nullptr) != SQLITE_OK) {
      return DataLossError(db.string() + " is not a Verdant run database: " + sqlite3_errmsg(s->db_));
    }
    Stmt st(raw);
    int rc;
    while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) meta[ColText(st.get(), 0)] = ColText(st.get(), 1);
    if (rc != SQLITE_DONE) return SqlError(s->db_, db.string());
  }
  if (meta["schema_version"] != kSchemaVersion) {
    return DataLossError(db.string() + " has schema version '" + meta["schema_version"] + "', this build reads " +
                         kSchemaVersion);
  }
  // Same configuration, or a clear list of what differs.
  const auto want = ParseFingerprint(fingerprint), have = ParseFingerprint(meta["fingerprint"]);
  for (const auto& [k, v] : want) {
    auto it = have.find(k);
    const std::string stored = it == have.end() ? "(unset)" : it->second;
    if (stored != v) {
      return FailedPreconditionError("cannot resume " + dir.string() + ": it is a run with " + k + "=" + stored +
                                     ", this configuration has " + k + "=" + v);
    }
  }
  s->last_round_ = std::strtoull(meta["last_round"].c_str(), nullptr, 10);
  s->checkpoint_file_ = meta["checkpoint_file"];
  s->checkpoint_hash_ = meta["checkpoint_hash"];
  if (s->checkpoint_file_.empty()) {
    return NotFoundError(dir.string() + " holds a run that was stopped before its first checkpoint: start it again "
                         "(without --resume)");
  }
  return s;
}

bool RunStore::HoldsRun(const fs::path& dir) {
  const fs::path db = dir / kDatabaseFile;
  if (!fs::exists(db)) return false;
  sqlite3* h = nullptr;
  bool holds = true;  // when in doubt (damaged file), it holds something
  if (sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_busy_timeout(h, 5000);
    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v2(h, "SELECT value FROM meta WHERE key = 'checkpoint_file'", -1, &raw, nullptr) ==
        SQLITE_OK) {
      Stmt st(raw);
      const int rc = sqlite3_step(st.get());
      holds = rc == SQLITE_ROW || (rc != SQLITE_DONE);
    } else {
      // No meta table yet: a start killed before its schema was written.
      const int code = sqlite3_errcode(h);
      holds = code == SQLITE_NOTADB || code == SQLITE_CORRUPT;
    }
  }
  sqlite3_close(h);
  return holds;
}

Status RunStore::Commit(const CoordinatorCheckpoint& checkpoint, const StoredRound* round,
                        const std::map<std::string, ClientHistory>& changed_clients) {
  const std::string bytes = EncodeCheckpoint(checkpoint);
  const std::string name = CheckpointName(checkpoint.round);
  VERDANT_RETURN_IF_ERROR(WriteFileDurably(dir_, name, bytes).WithContext("checkpoint"));
  const std::string hash = Hex(Blake2b(bytes));
  VERDANT_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto body = [&]() -> Status {
    if (round != nullptr) {
      const RoundRecord& r = round->record;
      VERDANT_ASSIGN_OR_RETURN(
          Stmt st, Prepare(db_, "INSERT INTO rounds VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"));
      sqlite3_stmt* p = st.get();
      BindU64(p, 1, r.round);
      BindU64(p, 2, r.selected);
      BindU64(p, 3, r.completed);
      BindU64(p, 4, r.failed);
      if (r.accuracy) sqlite3_bind_double(p, 5, *r.accuracy);
      if (r.loss) sqlite3_bind_double(p, 6, *r.loss);
      BindU64(p, 7, r.bytes_up);
      BindU64(p, 8, r.bytes_down);
      sqlite3_bind_double(p, 9, r.wall_seconds);
      sqlite3_bind_double(p, 10, r.train_loss);
      sqlite3_bind_double(p, 11, r.eval_seconds);
      BindText(p, 12, r.started_utc);
      BindU64(p, 13, r.model_updated ? 1 : 0);
      sqlite3_bind_double(p, 14, r.energy_joules);
      sqlite3_bind_double(p, 15, r.emissions_g);
      sqlite3_bind_double(p, 16, r.embodied_g);
      sqlite3_bind_double(p, 17, r.deferred_seconds);
      BindText(p, 18, EncodeMetrics(r.metrics));
      if (sqlite3_step(p) != SQLITE_DONE) return SqlError(db_, "run.db: storing round " + std::to_string(r.round));
      VERDANT_ASSIGN_OR_RETURN(
          Stmt cs, Prepare(db_, "INSERT INTO client_rounds VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,"
                                "?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"));
      uint64_t seq = 0;
      for (const auto& c : round->clients) {
        sqlite3_stmt* q = cs.get();
        sqlite3_reset(q);
        sqlite3_clear_bindings(q);
        const ClientRoundRecord& a = c.report;
        BindU64(q, 1, a.round);
        BindU64(q, 2, seq++);
        BindText(q, 3, a.client_id);
        BindText(q, 4, a.status);
        BindText(q, 5, a.reason);
        BindU64(q, 6, a.num_examples);
        sqlite3_bind_double(q, 7, a.train_loss);
        sqlite3_bind_double(q, 8, a.train_seconds);
        BindU64(q, 9, a.bytes_up);
        BindU64(q, 10, a.bytes_down);
        BindText(q, 11, a.zone);
        BindText(q, 12, a.time_utc);
        sqlite3_bind_double(q, 13, a.compute_joules);
        sqlite3_bind_double(q, 14, a.radio_joules);
        sqlite3_bind_double(q, 15, a.idle_joules);
        sqlite3_bind_double(q, 16, a.intensity_g_per_kwh);
        sqlite3_bind_double(q, 17, a.emissions_g);
        sqlite3_bind_double(q, 18, a.embodied_g);
        BindText(q, 19, a.energy_method);
        BindText(q, 20, a.codec);
        BindU64(q, 21, c.ledger ? 1 : 0);
        if (c.ledger) {
          const energy::ClientRoundRecord& l = *c.ledger;
          BindText(q, 22, l.zone);
          sqlite3_bind_int64(q, 23, l.time_utc.time_since_epoch().count());
          sqlite3_bind_int64(q, 24, l.wall_start.time_since_epoch().count());
          sqlite3_bind_int64(q, 25, l.duration.count());
          sqlite3_bind_double(q, 26, l.compute.joules());
          sqlite3_bind_double(q, 27, l.radio.joules());
          sqlite3_bind_double(q, 28, l.idle.joules());
          BindU64(q, 29, l.bytes_up.count);
          BindU64(q, 30, l.bytes_down.count);
          sqlite3_bind_double(q, 31, l.intensity.grams_per_kwh());
          BindText(q, 32, l.intensity_source);
          sqlite3_bind_int64(q, 33, static_cast<int>(l.intensity_kind));
          sqlite3_bind_int64(q, 34, static_cast<int>(l.intensity_scope));
          sqlite3_bind_double(q, 35, l.emissions.grams());
          sqlite3_bind_double(q, 36, l.embodied.grams());
          BindText(q, 37, l.energy_method);
          BindText(q, 38, l.codec);
          BindU64(q, 39, l.samples);
        }
        if (sqlite3_step(q) != SQLITE_DONE) return SqlError(db_, "run.db: storing client rows");
      }
    }
    if (!changed_clients.empty()) {
      VERDANT_ASSIGN_OR_RETURN(Stmt st, Prepare(db_, "INSERT OR REPLACE INTO clients VALUES(?,?,?,?,?,?,?)"));
      for (const auto& [id, h] : changed_clients) {
        sqlite3_stmt* p = st.get();
        sqlite3_reset(p);
        BindText(p, 1, id);
        BindU64(p, 2, h.rounds_selected);
        BindU64(p, 3, h.rounds_completed);
        BindU64(p, 4, h.rounds_failed);
        sqlite3_bind_double(p, 5, h.last_train_seconds);
        sqlite3_bind_double(p, 6, h.last_train_loss);
        BindU64(p, 7, h.last_round_selected);
        if (sqlite3_step(p) != SQLITE_DONE) return SqlError(db_, "run.db: storing the client registry");
      }
    }
    VERDANT_ASSIGN_OR_RETURN(Stmt m, Prepare(db_, "INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)"));
    for (const auto& [k, v] : std::map<std::string, std::string>{{"last_round", std::to_string(checkpoint.round)},
                                                                 {"checkpoint_file", name},
                                                                 {"checkpoint_hash", hash}}) {
      sqlite3_reset(m.get());
      BindText(m.get(), 1, k);
      BindText(m.get(), 2, v);
      if (sqlite3_step(m.get()) != SQLITE_DONE) return SqlError(db_, "run.db meta");
    }
    return OkStatus();
  };
  Status st = body();
  if (!st.ok()) {
    Exec("ROLLBACK").IgnoreError();
    std::error_code ec;
    if (name != checkpoint_file_) fs::remove(dir_ / name, ec);
    return st;
  }
  VERDANT_RETURN_IF_ERROR(Exec("COMMIT"));
  // The new checkpoint is the committed one: the older files can go.
  checkpoint_file_ = name;
  checkpoint_hash_ = hash;
  last_round_ = checkpoint.round;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string f = entry.path().filename().string();
    if (f.rfind("checkpoint-", 0) == 0 && f != name) fs::remove(entry.path(), ec);
  }
  return OkStatus();
}

Result<CoordinatorCheckpoint> RunStore::LoadCheckpoint() const {
  const fs::path file = dir_ / checkpoint_file_;
  std::ifstream in(file, std::ios::binary);
  if (!in) return DataLossError("checkpoint " + file.string() + " named by run.db is missing");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (Hex(Blake2b(bytes)) != checkpoint_hash_) {
    return DataLossError("checkpoint " + file.string() + " does not match the checksum run.db recorded for it");
  }
  auto c = DecodeCheckpoint(bytes);
  if (!c.ok()) return c.status().WithContext(file.string());
  if (c->round != last_round_) {
    return DataLossError("checkpoint " + file.string() + " is of round " + std::to_string(c->round) +
                         ", run.db says " + std::to_string(last_round_));
  }
  return c;
}

Result<std::vector<StoredRound>> RunStore::LoadRounds() const {
  std::vector<StoredRound> out;
  std::map<uint64_t, size_t> index;
  {
    VERDANT_ASSIGN_OR_RETURN(Stmt st, Prepare(db_, "SELECT * FROM rounds WHERE round <= ? ORDER BY round"));
    sqlite3_stmt* p = st.get();
    BindU64(p, 1, last_round_);
    int rc;
    while ((rc = sqlite3_step(p)) == SQLITE_ROW) {
      RoundRecord r;
      r.round = ColU64(p, 0);
      r.selected = ColU64(p, 1);
      r.completed = ColU64(p, 2);
      r.failed = ColU64(p, 3);
      if (sqlite3_column_type(p, 4) != SQLITE_NULL) r.accuracy = sqlite3_column_double(p, 4);
      if (sqlite3_column_type(p, 5) != SQLITE_NULL) r.loss = sqlite3_column_double(p, 5);
      r.bytes_up = ColU64(p, 6);
      r.bytes_down = ColU64(p, 7);
      r.wall_seconds = sqlite3_column_double(p, 8);
      r.train_loss = sqlite3_column_double(p, 9);
      r.eval_seconds = sqlite3_column_double(p, 10);
      r.started_utc = ColText(p, 11);
      r.model_updated = ColU64(p, 12) != 0;
      r.energy_joules = sqlite3_column_double(p, 13);
      r.emissions_g = sqlite3_column_double(p, 14);
      r.embodied_g = sqlite3_column_double(p, 15);
      r.deferred_seconds = sqlite3_column_double(p, 16);
      r.metrics = DecodeMetrics(ColText(p, 17));
      index[r.round] = out.size();
      out.push_back(StoredRound{std::move(r), {}});
    }
    if (rc != SQLITE_DONE) return SqlError(db_, "run.db: reading rounds");
  }
  VERDANT_ASSIGN_OR_RETURN(Stmt st,
                           Prepare(db_, "SELECT * FROM client_rounds WHERE round <= ? ORDER BY round, seq"));
  sqlite3_stmt* q = st.get();
  BindU64(q, 1, last_round_);
  int rc;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    StoredClientRound c;
    ClientRoundRecord& a = c.report;
    a.round = ColU64(q, 0);
    a.client_id = ColText(q, 2);
    a.status = ColText(q, 3);
    a.reason = ColText(q, 4);
    a.num_examples = ColU64(q, 5);
    a.train_loss = sqlite3_column_double(q, 6);
    a.train_seconds = sqlite3_column_double(q, 7);
    a.bytes_up = ColU64(q, 8);
    a.bytes_down = ColU64(q, 9);
    a.zone = ColText(q, 10);
    a.time_utc = ColText(q, 11);
    a.compute_joules = sqlite3_column_double(q, 12);
    a.radio_joules = sqlite3_column_double(q, 13);
    a.idle_joules = sqlite3_column_double(q, 14);
    a.intensity_g_per_kwh = sqlite3_column_double(q, 15);
    a.emissions_g = sqlite3_column_double(q, 16);
    a.embodied_g = sqlite3_column_double(q, 17);
    a.energy_method = ColText(q, 18);
    a.codec = ColText(q, 19);
    if (ColU64(q, 20) != 0) {
      energy::ClientRoundRecord l;
      l.round = a.round;
      l.client_id = a.client_id;
      l.zone = ColText(q, 21);
      l.time_utc = TimePoint(Duration(sqlite3_column_int64(q, 22)));
      l.wall_start = TimePoint(Duration(sqlite3_column_int64(q, 23)));
      l.duration = Duration(sqlite3_column_int64(q, 24));
      l.compute = Energy::Joules(sqlite3_column_double(q, 25));
      l.radio = Energy::Joules(sqlite3_column_double(q, 26));
      l.idle = Energy::Joules(sqlite3_column_double(q, 27));
      l.bytes_up = Bytes{ColU64(q, 28)};
      l.bytes_down = Bytes{ColU64(q, 29)};
      l.intensity = CarbonIntensity::GramsPerKwh(sqlite3_column_double(q, 30));
      l.intensity_source = ColText(q, 31);
      a.intensity_source = l.intensity_source;  // the report shows the ledger row's source
      l.intensity_kind = static_cast<energy::IntensityKind>(sqlite3_column_int64(q, 32));
      l.intensity_scope = static_cast<energy::EmissionScope>(sqlite3_column_int64(q, 33));
      l.emissions = Emissions::Grams(sqlite3_column_double(q, 34));
      l.embodied = Emissions::Grams(sqlite3_column_double(q, 35));
      l.energy_method = ColText(q, 36);
      l.codec = ColText(q, 37);
      l.samples = ColU64(q, 38);
      c.ledger = std::move(l);
    }
    auto it = index.find(a.round);
    if (it == index.end()) return DataLossError("run.db: client rows of round " + std::to_string(a.round) + " without the round");
    out[it->second].clients.push_back(std::move(c));
  }
  if (rc != SQLITE_DONE) return SqlError(db_, "run.db: reading client rounds");
  if (out.size() != last_round_ || (!out.empty() && out.back().record.round != last_round_)) {
    return DataLossError("run.db: " + std::to_string(out.size()) + " rounds stored, but the last completed round is " +
                         std::to_string(last_round_));
  }
  return out;
}

Result<std::map<std::string, ClientHistory>> RunStore::LoadRegistry() const {
  std::map<std::string, ClientHistory> out;
  VERDANT_ASSIGN_OR_RETURN(Stmt st, Prepare(db_, "SELECT * FROM clients"));
  sqlite3_stmt* p = st.get();
  int rc;
  while ((rc = sqlite3_step(p)) == SQLITE_ROW) {
    ClientHistory h;
    h.rounds_selected = ColU64(p, 1);
    h.rounds_completed = ColU64(p, 2);
    h.rounds_failed = ColU64(p, 3);
    h.last_train_seconds = sqlite3_column_double(p, 4);
    h.last_train_loss = sqlite3_column_double(p, 5);
    h.last_round_selected = ColU64(p, 6);
    out[ColText(p, 0)] = h;
  }
  if (rc != SQLITE_DONE) return SqlError(db_, "run.db: reading the client registry");
  return out;
}

}  // namespace verdant
