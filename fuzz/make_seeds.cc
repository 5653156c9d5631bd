// Writes the seed corpora under fuzz/corpus/<target>/ (run once; the seeds
// are committed). Build: see scripts/fuzz.sh (target verdant_fuzz_seeds).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "fuzz_common.h"
#include "verdant/transport/framing.h"
#include "verdant/transport/message.h"
#include "verdant/transport/secure_channel.h"

namespace {
void Write(const std::filesystem::path& dir, const std::string& name, const std::vector<uint8_t>& bytes) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                                    static_cast<std::streamsize>(bytes.size()));
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s fuzz/corpus\n", argv[0]);
    return 2;
  }
  std::filesystem::path root = argv[1];
  using namespace verdant;
  auto i = fuzz::MakeInitiator();
  auto r = fuzz::MakeResponder();
  auto m1 = *i->WriteMessage();
  (void)*r->ReadMessage(m1);
  auto m2 = *r->WriteMessage();
  (void)*i->ReadMessage(m2);
  auto m3 = *i->WriteMessage();
  (void)*r->ReadMessage(m3);
  Write(root / "noise_msg1_fuzz", "msg1", m1);
  Write(root / "noise_msg1_fuzz", "msg1_with_payload", [&] {
    auto v = m1;
    v.insert(v.end(), {'h', 'i'});
    return v;
  }());
  Write(root / "noise_msg1_fuzz", "low_order_zero", std::vector<uint8_t>(32, 0));
  Write(root / "noise_msg2_fuzz", "msg2", m2);
  Write(root / "noise_msg2_fuzz", "short", std::vector<uint8_t>(m2.begin(), m2.begin() + 40));
  Write(root / "noise_msg3_fuzz", "msg3", m3);
  Write(root / "noise_msg3_fuzz", "short", std::vector<uint8_t>(m3.begin(), m3.begin() + 20));
  // Records: the initiator's first records, each with a length byte.
  auto layer = *i->Split(RekeyPolicy{2, 0});
  std::vector<uint8_t> recs, rec;
  for (const char* msg : {"hello", "", "a longer record of text"}) {
    std::string s(msg);
    (void)layer->Seal(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()), rec);
    recs.push_back(static_cast<uint8_t>(rec.size()));
    recs.insert(recs.end(), rec.begin(), rec.end());
  }
  Write(root / "record_open_fuzz", "three_records", recs);
  // Frames: limit byte, chunk byte, then a stream.
  std::vector<uint8_t> stream = {0x10, 7};
  (void)AppendFrame(m1, stream);
  (void)AppendFrame(m2, stream);
  Write(root / "frame_decoder_fuzz", "two_frames", stream);
  Write(root / "frame_decoder_fuzz", "oversize", {0x00, 1, 0x7f, 0xff, 0xff, 0xff, 1, 2});
  Write(root / "frame_decoder_fuzz", "empty_frame", {0x10, 3, 0, 0, 0, 0});
  // Chunk envelopes: a first chunk (seq 0 omitted), a later one, an empty one.
  const std::vector<uint8_t> payload = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  auto chunks = MakeChunkMessages(300, payload, 4);
  Write(root / "chunk_view_fuzz", "first", *chunks[0]);
  Write(root / "chunk_view_fuzz", "later", *chunks[2]);
  Write(root / "chunk_view_fuzz", "empty", {0x42, 0});
  std::printf("seeds written under %s\n", root.c_str());
  return 0;
}
