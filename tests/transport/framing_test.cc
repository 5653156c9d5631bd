#include <doctest/doctest.h>

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
      }
    }
  }
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
