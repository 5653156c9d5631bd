#include <doctest/doctest.h>

#include <algorithm>
#include <optional>

#include "verdant/core/rng.h"
#include "verdant/testing/temp_dir.h"
#include "verdant/transport/framing.h"
#include "verdant/transport/session.h"
#include "verdant/transport/message.h"

using namespace verdant;

TEST_CASE("frames survive being split at every byte boundary") {
  std::vector<uint8_t> stream;
  std::vector<std::vector<uint8_t>> payloads = {{1}, {2, 3, 4}, std::vector<uint8_t>(1000, 7)};
  for (auto& p : payloads) REQUIRE(AppendFrame(p, stream).ok());
  for (size_t split = 1; split < stream.size(); split += 37) {
    FrameDecoder d(4096);
    for (size_t off = 0; off < stream.size(); off += split) {
      size_t n = std::min(split, stream.size() - off);
      REQUIRE(d.Feed(std::span<const uint8_t>(stream).subspan(off, n)).ok());
    }
    for (auto& p : payloads) {
      auto f = d.Next();
      REQUIRE(f.has_value());
      CHECK(*f == p);
    }
    CHECK_FALSE(d.Next().has_value());
    CHECK_FALSE(d.HasPartialFrame());
  }
}

TEST_CASE("an oversize frame is rejected from its header before allocation") {
  FrameDecoder d(1024);
  uint8_t h[4];
  PutFrameHeader(0xFFFFFFF0u, h);
  Status st = d.Feed(std::span<const uint8_t>(h, 4));
  CHECK(st.code() == StatusCode::kResourceExhausted);
  // The decoder stays failed.
  std::vector<uint8_t> more{0, 0, 0, 1, 9};
  CHECK_FALSE(d.Feed(more).ok());
  // Exactly at the limit is fine; one over is not.
  FrameDecoder e(8);
  std::vector<uint8_t> ok, bad;
  REQUIRE(AppendFrame(std::vector<uint8_t>(8, 1), ok, 8).ok());
  CHECK(e.Feed(ok).ok());
  CHECK_FALSE(AppendFrame(std::vector<uint8_t>(9, 1), bad, 8).ok());
}

TEST_CASE("empty frames and truncated frames are detected") {
  FrameDecoder d(100);
  std::vector<uint8_t> zero{0, 0, 0, 0};
  CHECK(d.Feed(zero).code() == StatusCode::kDataLoss);
  FrameDecoder t(100);
  std::vector<uint8_t> partial{0, 0, 0, 10, 1, 2, 3};
  CHECK(t.Feed(partial).ok());
  CHECK_FALSE(t.Next().has_value());
  CHECK(t.HasPartialFrame());
}

TEST_CASE("envelopes round-trip and garbage or unknown types are errors") {
  wire::Envelope env;
  env.mutable_hello()->set_protocol_version(1);
  env.mutable_hello()->set_client_name("x");
  auto bytes = SerializeEnvelope(env);
  REQUIRE(bytes.ok());
  auto back = ParseEnvelope(*bytes);
  REQUIRE(back.ok());
  CHECK(back->hello().client_name() == "x");
  CHECK(MessageTypeName(*back) == "Hello");
  std::vector<uint8_t> garbage{0xff, 0xff, 0xff, 0xff, 0xff};
  CHECK(ParseEnvelope(garbage).status().code() == StatusCode::kDataLoss);
  // Field 99 (varint 5): a well-formed protobuf with no known message type.
  std::vector<uint8_t> unknown{0x98, 0x06, 0x05};
  CHECK(ParseEnvelope(unknown).status().code() == StatusCode::kInvalidArgument);
  CHECK(ParseEnvelope(std::vector<uint8_t>{}).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("payloads are chunked and reassembled and violations are data loss") {
  Rng rng(3);
  std::vector<uint8_t> payload(10000);
  for (auto& b : payload) b = static_cast<uint8_t>(rng.Next());
  auto chunks = MakeChunkMessages(42, payload, 3000);
  REQUIRE(chunks.size() == 4);
  CHECK(NumChunks(10000, 3000) == 4);
  wire::PayloadInfo info;
  info.set_stream_id(42);
  info.set_payload_bytes(payload.size());
  info.set_num_chunks(4);
  std::vector<wire::Chunk> parsed;
  for (auto& c : chunks) parsed.push_back(ParseEnvelope(*c)->chunk());

  PayloadAssembler a(info, 1 << 20);
  REQUIRE(a.status().ok());
  for (auto& c : parsed) REQUIRE(a.Add(c).ok());
  REQUIRE(a.complete());
  CHECK(a.Take() == payload);

  PayloadAssembler out_of_order(info, 1 << 20);
  CHECK(out_of_order.Add(parsed[1]).code() == StatusCode::kDataLoss);

  wire::Chunk other = parsed[0];
  other.set_stream_id(7);
  PayloadAssembler wrong_stream(info, 1 << 20);
  CHECK(wrong_stream.Add(other).code() == StatusCode::kDataLoss);

  wire::PayloadInfo small = info;
  small.set_payload_bytes(5000);
  small.set_num_chunks(4);
  PayloadAssembler overflow(small, 1 << 20);
  REQUIRE(overflow.Add(parsed[0]).ok());
  CHECK(overflow.Add(parsed[1]).code() == StatusCode::kDataLoss);

  PayloadAssembler too_big(info, 100);
  CHECK_FALSE(too_big.status().ok());
  wire::PayloadInfo silly = info;
  silly.set_num_chunks(100000);
  PayloadAssembler silly_a(silly, 1 << 20);
  CHECK_FALSE(silly_a.status().ok());
}

TEST_CASE("chunk messages are byte for byte protobuf's serialisation") {
  // MakeChunkMessages writes the wire format by hand; protobuf must agree,
  // including zero stream ids, seq 0 (omitted in proto3), multi-byte varints
  // and a short last chunk.
  Rng rng(11);
  std::vector<uint8_t> payload(70000);
  for (auto& b : payload) b = static_cast<uint8_t>(rng.Next());
  for (uint64_t stream : {uint64_t{0}, uint64_t{1}, uint64_t{300}, ~uint64_t{0}}) {
    for (uint32_t chunk_bytes : {1u, 127u, 128u, 16384u, 65536u}) {
      const auto span = std::span<const uint8_t>(payload).first(chunk_bytes == 1 ? 300 : payload.size());
      auto chunks = MakeChunkMessages(stream, span, chunk_bytes);
      REQUIRE(chunks.size() == NumChunks(span.size(), chunk_bytes));
      for (uint32_t i = 0; i < chunks.size(); ++i) {
        wire::Envelope env;
        auto* c = env.mutable_chunk();
        c->set_stream_id(stream);
        c->set_seq(i);
        const size_t off = size_t{i} * chunk_bytes;
        c->set_data(span.data() + off, std::min<size_t>(chunk_bytes, span.size() - off));
        std::string want;
        REQUIRE(env.SerializeToString(&want));
        REQUIRE(chunks[i]->size() == want.size());
        CHECK(std::equal(chunks[i]->begin(), chunks[i]->end(), reinterpret_cast<const uint8_t*>(want.data())));
        CHECK(ChunkEnvelopeBytes(stream, i, c->data().size()) == want.size());
      }
    }
  }
  // The size formula alone, at varint boundaries (and an empty chunk).
  for (uint64_t stream : {uint64_t{0}, uint64_t{127}, uint64_t{128}, ~uint64_t{0}}) {
    for (uint32_t seq : {0u, 1u, 127u, 128u, 16384u, ~0u}) {
      for (uint64_t len : {uint64_t{0}, uint64_t{1}, uint64_t{127}, uint64_t{128}, uint64_t{16384}}) {
        wire::Envelope env;
        env.mutable_chunk()->set_stream_id(stream);
        env.mutable_chunk()->set_seq(seq);
        env.mutable_chunk()->set_data(std::string(len, 'x'));
        CHECK(ChunkEnvelopeBytes(stream, seq, len) == env.ByteSizeLong());
      }
    }
  }
}

namespace {

// What protobuf reads from `bytes`, as a view, when they are a Chunk envelope.
std::optional<ChunkView> ProtobufChunk(std::span<const uint8_t> bytes, wire::Envelope& env) {
  auto parsed = ParseEnvelope(bytes);
  if (!parsed.ok() || !parsed->has_chunk()) return std::nullopt;
  env = std::move(*parsed);
  return ToChunkView(env.chunk());
}

bool SameChunk(const ChunkView& a, const ChunkView& b) {
  return a.stream_id == b.stream_id && a.seq == b.seq && std::ranges::equal(a.data, b.data);
}

}  // namespace

TEST_CASE("chunk views read what protobuf reads, in place") {
  Rng rng(12);
  std::vector<uint8_t> payload(70000);
  for (auto& b : payload) b = static_cast<uint8_t>(rng.Next());
  for (uint64_t stream : {uint64_t{0}, uint64_t{1}, uint64_t{300}, ~uint64_t{0}}) {
    for (uint32_t chunk_bytes : {127u, 128u, 65536u}) {
      for (const auto& c : MakeChunkMessages(stream, payload, chunk_bytes)) {
        auto view = ParseChunkView(*c);
        REQUIRE(view.has_value());
        wire::Envelope env;
        auto want = ProtobufChunk(*c, env);
        REQUIRE(want.has_value());
        CHECK(SameChunk(*view, *want));
        // No copy: the data lies inside the message bytes.
        CHECK(view->data.data() >= c->data());
        CHECK(view->data.data() + view->data.size() == c->data() + c->size());
      }
    }
  }
  // Fields in another order, and absent fields, are read as protobuf reads them.
  const std::vector<uint8_t> reordered = {0x42, 9, 0x1a, 3, 'a', 'b', 'c', 0x10, 5, 0x08, 7};
  auto view = ParseChunkView(reordered);
  REQUIRE(view.has_value());
  CHECK(view->stream_id == 7);
  CHECK(view->seq == 5);
  CHECK(view->data.size() == 3);
  const std::vector<uint8_t> empty_chunk = {0x42, 0};
  view = ParseChunkView(empty_chunk);
  REQUIRE(view.has_value());
  CHECK((view->stream_id == 0 && view->seq == 0 && view->data.empty()));
}

TEST_CASE("chunk views leave everything unusual to protobuf") {
  // Each of these is either not a plain Chunk envelope or malformed: the
  // view declines, and ParseEnvelope (which the session falls back to)
  // decides.
  const std::vector<std::vector<uint8_t>> declined = {
      {},                                    // nothing
      {0x0a, 0},                             // a Hello
      {0x42, 2, 0x08, 1, 0x00},              // length past the end
      {0x42, 2, 0x08, 1, 0x22, 0},           // trailing field after the chunk
      {0x42, 4, 0x08, 1, 0x08, 2},           // duplicate stream id (protobuf: last wins)
      {0x42, 2, 0x20, 1},                    // unknown Chunk field
      {0x42, 3, 0x1a, 5, 'x'},               // data longer than the message
      {0x42, 2, 0x08, 0x80},                 // truncated varint
      {0x42, 11, 0x10, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01},  // seq wider than uint32
      {0xc2, 0x00, 0},                       // a non-minimal tag
  };
  for (const auto& bytes : declined) {
    CAPTURE(bytes.size());
    CHECK_FALSE(ParseChunkView(bytes).has_value());
  }
  // Random corruptions of real chunk messages: whatever the view accepts,
  // protobuf parses to the same fields.
  Rng rng(13);
  std::vector<uint8_t> payload(300);
  for (auto& b : payload) b = static_cast<uint8_t>(rng.Next());
  const auto chunks = MakeChunkMessages(300, payload, 100);
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::vector<uint8_t> m = *chunks[rng.Next() % chunks.size()];
    const int edits = 1 + static_cast<int>(rng.Next() % 3);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng.Next() % m.size();
      switch (rng.Next() % 3) {
        case 0: m[at] = static_cast<uint8_t>(rng.Next()); break;
        case 1: m.resize(at + 1); break;
        default: m.insert(m.begin() + static_cast<long>(at), static_cast<uint8_t>(rng.Next())); break;
      }
      if (m.empty()) m.push_back(0);
    }
    auto view = ParseChunkView(m);
    if (!view) continue;
    ++accepted;
    wire::Envelope env;
    auto want = ProtobufChunk(m, env);
    REQUIRE(want.has_value());
    CHECK(SameChunk(*view, *want));
  }
  CHECK(accepted > 100);  // the corruptions did exercise the accepting path
}

TEST_CASE("an assembler reuses the storage it is given") {
  std::vector<uint8_t> payload(5000, 7);
  auto chunks = MakeChunkMessages(5, payload, 1000);
  wire::PayloadInfo info;
  info.set_stream_id(5);
  info.set_payload_bytes(payload.size());
  info.set_num_chunks(static_cast<uint32_t>(chunks.size()));
  ByteBuffer storage(1 << 16, 0xee);  // stale bytes from an earlier payload
  const uint8_t* memory = storage.data();
  PayloadAssembler a(info, 1 << 20, std::move(storage));
  REQUIRE(a.status().ok());
  for (auto& c : chunks) REQUIRE(a.Add(ParseEnvelope(*c)->chunk()).ok());
  REQUIRE(a.complete());
  ByteBuffer out = a.Take();
  CHECK(out == payload);
  CHECK(out.data() == memory);  // the same allocation, no new one
}

TEST_CASE("ParseHostPort") {
  auto hp = ParseHostPort("127.0.0.1:7070");
  REQUIRE(hp.ok());
  CHECK(hp->first == "127.0.0.1");
  CHECK(hp->second == 7070);
  CHECK_FALSE(ParseHostPort("localhost").ok());
  CHECK_FALSE(ParseHostPort("h:0").ok());
  CHECK_FALSE(ParseHostPort("h:70000").ok());
  CHECK_FALSE(ParseHostPort("h:12x").ok());
}
