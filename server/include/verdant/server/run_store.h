// verdant/server/run_store.h
//
// RunStore: what a coordinator needs to survive a crash, in its output
// folder. `run.db` (SQLite, WAL mode, synchronous=FULL) holds the run's
// identity, every completed round (rounds.csv's rows), every client-round
// with its ledger row (clients.csv's rows) and the client registry (each
// client's participation history across sessions). `checkpoint-<round>.bin`
// holds the global model, the model clients hold (delta downlink), the
// strategy's and selector's state, the coordinator's RNG and counters, with
// a BLAKE2b checksum. A round commits in this order: the checkpoint file is
// written to a temporary name, fsync'ed, renamed and its folder fsync'ed;
// then one SQLite transaction adds the round's rows and points `meta` at
// the new file; then older checkpoint files are removed. A kill -9 at any
// moment leaves either the previous round or the new one, never a mix.
//   auto store = RunStore::Create(dir, fingerprint, /*replace_existing=*/false);
//   VERDANT_RETURN_IF_ERROR((*store)->Commit(checkpoint, &round, registry_changes));
//   auto again = RunStore::Open(dir, fingerprint);       // after a crash
//   auto ckpt = (*again)->LoadCheckpoint();              // checksum verified
// Thread-safety: not thread-safe; the coordinator uses it from its round
// thread only.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "verdant/core/rng.h"
#include "verdant/core/status.h"
#include "verdant/energy/ledger.h"
#include "verdant/server/run_report.h"

struct sqlite3;

namespace verdant {

// One client's participation as the coordinator's registry keeps it, by
// client id, across sessions and restarts.
struct ClientHistory {
  uint64_t rounds_selected = 0;
  uint64_t rounds_completed = 0;
  uint64_t rounds_failed = 0;
  double last_train_seconds = 0;
  double last_train_loss = 0;
  uint64_t last_round_selected = 0;
  friend bool operator==(const ClientHistory&, const ClientHistory&) = default;
};

// The coordinator's state after a completed round (round 0: before round 1).
struct CoordinatorCheckpoint {
  uint64_t round = 0;
  uint64_t model_version = 1;
  uint64_t layout_fingerprint = 0;
  std::vector<float> global;
  std::vector<float> broadcast;  // what clients hold (empty: = global)
  uint64_t broadcast_version = 0;
  std::string strategy_state;
  std::string selector_state;
  Rng::State rng;
  uint64_t next_task_id = 0;
  int64_t grid_offset_us = 0;  // carbon deferrals so far, microseconds
};

// One selected client's outcome in a round: the clients.csv row and, when
// the ledger accounted it, the ledger's row.
struct StoredClientRound {
  ClientRoundRecord report;
  std::optional<energy::ClientRoundRecord> ledger;
};

struct StoredRound {
  RoundRecord record;
  std::vector<StoredClientRound> clients;
};

class RunStore {
 public:
  ~RunStore();
  RunStore(const RunStore&) = delete;
  RunStore& operator=(const RunStore&) = delete;

  // A new run in `dir` (created if needed) identified by `fingerprint`
  // ("key=value" lines naming what must not change on resume). When `dir`
  // already holds a run: kAlreadyExists naming --resume, unless
  // `replace_existing` (then the old database and checkpoints are removed).
  static Result<std::unique_ptr<RunStore>> Create(const std::filesystem::path& dir, const std::string& fingerprint,
                                                  bool replace_existing);
  // The run in `dir`, to resume. kNotFound when `dir` or its run.db is
  // missing or the run never committed its initial checkpoint; kDataLoss when run.db is not a Verdant run database (or is
  // corrupt); kFailedPrecondition naming the first differing key when the
  // run was started with another configuration.
  static Result<std::unique_ptr<RunStore>> Open(const std::filesystem::path& dir, const std::string& fingerprint);

  // True when `dir` holds a run that committed at least its initial
  // checkpoint (or a database too damaged to tell), i.e. one to resume
  // rather than overwrite.
  static bool HoldsRun(const std::filesystem::path& dir);

  // Commits a completed round (or, with round == nullptr, the initial
  // checkpoint): writes the checkpoint file durably, then in one
  // transaction the round's rows, the changed registry entries and the
  // pointer to the new checkpoint. kUnavailable when a write fails (the
  // previous state stays the committed one).
  Status Commit(const CoordinatorCheckpoint& checkpoint, const StoredRound* round,
                const std::map<std::string, ClientHistory>& changed_clients);

  // The last committed round (0 = none yet).
  uint64_t last_round() const { return last_round_; }
  // The committed checkpoint; kDataLoss when the file is missing, truncated,
  // fails its checksum or is not the one run.db points at.
  Result<CoordinatorCheckpoint> LoadCheckpoint() const;
  // Every committed round with its client rows, ascending.
  Result<std::vector<StoredRound>> LoadRounds() const;
  // The client registry.
  Result<std::map<std::string, ClientHistory>> LoadRegistry() const;

  const std::filesystem::path& dir() const { return dir_; }
  static constexpr const char* kDatabaseFile = "run.db";

 private:
  RunStore() = default;
  Status Init(const std::filesystem::path& dir);
  Status Exec(const char* sql);
  std::filesystem::path dir_;
  sqlite3* db_ = nullptr;
  uint64_t last_round_ = 0;
  std::string checkpoint_file_;
  std::string checkpoint_hash_;
};

// Encodes and decodes a checkpoint file's bytes (magic, version, payload,
// BLAKE2b-256 of everything before it). Decode: kDataLoss on any mismatch.
std::string EncodeCheckpoint(const CoordinatorCheckpoint& c);
Result<CoordinatorCheckpoint> DecodeCheckpoint(std::string_view bytes);

}  // namespace verdant
