// safetensors: round trips of every dtype (scalars, zero-size tensors, special values,
// metadata) through memory and files, the writer's exact layout, a file laid out the way
// the Python/Rust implementation writes it (bytes built by hand), and one test per
// malformed input with its exact message.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "condense/core/factories.hpp"
#include "condense/io/safetensors.hpp"
#include "io/io_test_util.hpp"
#include "test_util.hpp"

namespace test_safetensors {

using namespace condense;
using namespace condense::io;
using condense::testing::le64;
using condense::testing::raw_bytes;
using condense::testing::read_bytes;
using condense::testing::same_file;
using condense::testing::st_bytes;
using condense::testing::temp_path;
using condense::testing::write_bytes;

namespace {

/// A file with every dtype, special values, a scalar, zero-size tensors and metadata.
TensorFile every_dtype_file() {
  TensorFile f;
  const float inf = std::numeric_limits<float>::infinity();
  f.tensors.emplace_back("f32", tensor<float>({1.5f, -0.0f, inf, -inf, std::nanf(""), 1e-42f}, {2, 3}));
  f.tensors.emplace_back("f64", tensor<double>({3.141592653589793, -1e308, 5e-324}, {3, 1}));
  f.tensors.emplace_back("f16", Tensor<float16>(tensor<float>({1.0f, -2.5f, 65504.0f, 6e-8f}).cast<float16>()));
  f.tensors.emplace_back("bf16", Tensor<bfloat16>(tensor<float>({1.0f, -3.0e38f, 0.15625f}).cast<bfloat16>()));
  f.tensors.emplace_back("i32", tensor<std::int32_t>({std::numeric_limits<std::int32_t>::min(), -1, 0,
                                                      std::numeric_limits<std::int32_t>::max()}, {2, 2}));
  f.tensors.emplace_back("i64", tensor<std::int64_t>({std::numeric_limits<std::int64_t>::min(), 42,
                                                      std::numeric_limits<std::int64_t>::max()}));
  f.tensors.emplace_back("scalar_f64", scalar_tensor<double>(-7.25));
  f.tensors.emplace_back("scalar_i64", scalar_tensor<std::int64_t>(123456789012345LL));
  f.tensors.emplace_back("empty_f32", zeros<float>({0}));
  f.tensors.emplace_back("empty_3d_i32", zeros<std::int32_t>({3, 0, 2}));
  f.tensors.emplace_back("après ünïcode/名前", tensor<float>({2.0f}));
  f.metadata = {{"format", "pt"}, {"note", "line\nbreak \"quoted\" ünïcode"}, {"", "empty key"}};
  return f;
}

}  // namespace

TEST_CASE("safetensors round trip: every dtype, scalars, zero-size tensors, metadata") {
  const TensorFile f = every_dtype_file();
  const auto bytes = serialize_safetensors(f);
  const TensorFile back = parse_safetensors(bytes, "mem");
  CHECK(same_file(f, back));
  CHECK(element_type(back.tensors[2].second) == DType::Float16);
  CHECK(shape_of(back.tensors[6].second) == Shape{});
  CHECK(shape_of(back.tensors[9].second) == Shape{3, 0, 2});
  CHECK(get_tensor<double>(back, "scalar_f64").item() == -7.25);
  CHECK(get_tensor<std::int64_t>(back, "i64").to_vector()[2] == std::numeric_limits<std::int64_t>::max());
  CHECK(std::bit_cast<std::uint32_t>(get_tensor<float>(back, "f32").to_vector()[1]) == 0x80000000u);  // -0 kept

  // Through a file: the same bytes on disk, the same tensors back.
  const std::string path = temp_path("every_dtype.safetensors");
  save_safetensors(path, f);
  CHECK(read_bytes(path) == bytes);
  const TensorFile loaded = load_safetensors(path);
  CHECK(same_file(f, loaded));
  const SafetensorsHeader header = read_safetensors_header(path);
  REQUIRE(header.tensors.size() == f.tensors.size());
  CHECK(header.tensors[1].name == "f64");
  CHECK(header.tensors[1].dtype == DType::Float64);
  CHECK(header.tensors[1].shape == Shape{3, 1});
  CHECK(header.tensors[1].begin == 24);
  CHECK(header.tensors[1].end == 48);
  CHECK(header.metadata == f.metadata);
  CHECK(8 + header.header_bytes + header.data_bytes == bytes.size());
  std::filesystem::remove(path);

  // An empty file (no tensors, no metadata) is "{}" padded to 8 bytes.
  const auto empty = serialize_safetensors(TensorFile{});
  CHECK(empty == st_bytes("{}      ", 0));
  CHECK(parse_safetensors(empty, "mem").tensors.empty());
}

TEST_CASE("safetensors writer layout: metadata first, TensorFile order, padded header, row-major data") {
  TensorFile f;
  f.tensors.emplace_back("z", tensor<std::int32_t>({1, 2, 3, 4, 5, 6}, {2, 3}).transpose(0, 1));  // strided view
  f.tensors.emplace_back("a", tensor<std::int64_t>({7}));
  f.metadata = {{"k", "v"}};
  const auto bytes = serialize_safetensors(f);
  const std::string json =
      R"({"__metadata__":{"k":"v"},"z":{"dtype":"I32","shape":[3,2],"data_offsets":[0,24]},)"
      R"("a":{"dtype":"I64","shape":[1],"data_offsets":[24,32]}})";
  const std::size_t padded = (json.size() + 7) / 8 * 8;
  REQUIRE(bytes.size() == 8 + padded + 32);
  CHECK(std::vector<std::uint8_t>(bytes.begin(), bytes.begin() + 8) == le64(padded));
  CHECK(std::string(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(padded)) ==
        json + std::string(padded - json.size(), ' '));
  // The transposed view is written row-major: 1 4 2 5 3 6.
  const TensorFile back = parse_safetensors(bytes, "mem");
  CHECK(testing::values(get_tensor<std::int32_t>(back, "z")) == std::vector<double>{1, 4, 2, 5, 3, 6});
  CHECK(serialize_safetensors(back) == bytes);  // deterministic
}

TEST_CASE("safetensors reads a file laid out by the Python/Rust implementation") {
  // save_file({"a": f32 [[1,2],[3,4]], "b": i64 [1,2,3], "c": bf16 [1,-2], "d": f16 0.5},
  //           metadata={"format": "pt"}): compact JSON, "__metadata__" first, entries
  // ordered by dtype then name, header padded with spaces to a multiple of 8.
  const std::string json =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"I64","shape":[3],"data_offsets":[0,24]},)"
      R"("a":{"dtype":"F32","shape":[2,2],"data_offsets":[24,40]},)"
      R"("c":{"dtype":"BF16","shape":[2],"data_offsets":[40,44]},)"
      R"("d":{"dtype":"F16","shape":[],"data_offsets":[44,46]}})";
  std::string header = json;
  header.append((8 - header.size() % 8) % 8, ' ');
  std::vector<std::uint8_t> bytes = le64(header.size());
  bytes.insert(bytes.end(), header.begin(), header.end());
  const std::vector<std::uint8_t> data = {
      1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0,  // b: int64 1, 2, 3
      0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40,                          // a: 1.0f, 2.0f
      0x00, 0x00, 0x40, 0x40, 0x00, 0x00, 0x80, 0x40,                          //    3.0f, 4.0f
      0x80, 0x3f, 0x00, 0xc0,                                                  // c: bf16 1.0, -2.0
      0x00, 0x38};                                                             // d: f16 0.5
  bytes.insert(bytes.end(), data.begin(), data.end());

  const TensorFile f = parse_safetensors(bytes, "python.safetensors");
  REQUIRE(f.tensors.size() == 4);
  CHECK(f.tensors[0].first == "b");
  CHECK(f.tensors[1].first == "a");
  CHECK(f.tensors[2].first == "c");
  CHECK(f.tensors[3].first == "d");
  CHECK(f.metadata == std::map<std::string, std::string>{{"format", "pt"}});
  CHECK(testing::values(get_tensor<std::int64_t>(f, "b")) == std::vector<double>{1, 2, 3});
  const auto a = get_tensor<float>(f, "a");
  CHECK(a.shape() == Shape{2, 2});
  CHECK(testing::values(a) == std::vector<double>{1, 2, 3, 4});
  CHECK(testing::values(to_float_tensor<float>(f.tensors[2].second)) == std::vector<double>{1, -2});
  const auto d = to_float_tensor<double>(f.tensors[3].second);
  CHECK(d.shape() == Shape{});
  CHECK(d.item() == 0.5);
  // Writing the same tensors in the same order reproduces the file byte for byte.
  CHECK(serialize_safetensors(f) == bytes);
}

TEST_CASE("safetensors reader: whitespace, unpadded header, header order differing from data order, null metadata") {
  const std::string json =
      "{\n  \"y\": {\"dtype\": \"I32\", \"shape\": [1], \"data_offsets\": [4, 8]},\n"
      "  \"x\": {\"data_offsets\": [0, 4], \"shape\": [1], \"dtype\": \"I32\"},\n  \"__metadata__\": null\n} \t\r\n";
  const TensorFile f = parse_safetensors(st_bytes(json, 8), "ws");
  REQUIRE(f.tensors.size() == 2);
  CHECK(f.tensors[0].first == "y");  // header order
  CHECK(get_tensor<std::int32_t>(f, "y").item() == 0x07060504);
  CHECK(get_tensor<std::int32_t>(f, "x").item() == 0x03020100);
  CHECK(f.metadata.empty());
  // Zero-size tensors may sit at any boundary, including the end of the buffer.
  const std::string z =
      R"({"e0":{"dtype":"F64","shape":[0,5],"data_offsets":[0,0]},"w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},)"
      R"("e1":{"dtype":"BF16","shape":[0],"data_offsets":[4,4]},"huge_empty":{"dtype":"F32","shape":[0,1099511627776],"data_offsets":[4,4]}})";
  const TensorFile g = parse_safetensors(st_bytes(z, 4), "zero");
  CHECK(g.tensors.size() == 4);
  CHECK(shape_of(g.tensors[3].second) == Shape{0, 1099511627776});
}

TEST_CASE("safetensors rejects bad lengths") {
  auto parse = [](const std::vector<std::uint8_t>& b) { return parse_safetensors(b, "t.st"); };
  CHECK_THROWS_WITH_AS(parse({}), "[safetensors] t.st: file is 0 bytes, shorter than the 8-byte header length", Error);
  CHECK_THROWS_WITH_AS(parse({1, 2, 3}), "[safetensors] t.st: file is 3 bytes, shorter than the 8-byte header length",
                       Error);
  CHECK_THROWS_WITH_AS(parse(le64(100000001)),
                       "[safetensors] t.st: header length 100000001 is larger than the 100000000-byte limit", Error);
  CHECK_THROWS_WITH_AS(parse(le64(~0ULL)),
                       "[safetensors] t.st: header length 18446744073709551615 is larger than the 100000000-byte limit",
                       Error);
  auto b = le64(100);
  b.resize(28, ' ');
  CHECK_THROWS_WITH_AS(parse(b),
                       "[safetensors] t.st: header length 100 runs past the end of the file (28 bytes, so at most 20 "
                       "header bytes)",
                       Error);
  CHECK_THROWS_WITH_AS(parse(le64(0)), doctest::Contains("[safetensors] t.st: header is not valid JSON: "), Error);
  // An empty label leaves the file part out.
  CHECK_THROWS_WITH_AS(parse_safetensors(std::vector<std::uint8_t>{1}, ""),
                       "[safetensors] file is 1 bytes, shorter than the 8-byte header length", Error);
}

TEST_CASE("safetensors rejects malformed headers") {
  auto check = [](const std::string& header, std::size_t data, const std::string& message) {
    INFO(header);
    CHECK_THROWS_WITH_AS(parse_safetensors(st_bytes(header, data), "t.st"), ("[safetensors] t.st: " + message).c_str(),
                         Error);
  };
  auto contains = [](const std::string& header, const std::string& message) {
    INFO(header);
    CHECK_THROWS_WITH_AS(parse_safetensors(st_bytes(header, 0), "t.st"), doctest::Contains(message.c_str()), Error);
  };
  const std::string ok = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  REQUIRE(parse_safetensors(st_bytes(R"({"a":)" + ok + "}", 8), "t.st").tensors.size() == 1);

  // Not JSON, not an object.
  contains(R"({"a":)", "[safetensors] t.st: header is not valid JSON: [json.exception.parse_error.101]");
  contains("{\"a\":1} x", "header is not valid JSON");
  contains("{\"\xff\":1}", "header is not valid JSON");  // invalid UTF-8
  contains("{\"a\":1, // comment\n}", "header is not valid JSON");
  contains(R"({"a":1e999})", "header is not valid JSON");
  check("[1,2]", 0, "header is an array, expected a JSON object");
  check(R"("text")", 0, "header is a string, expected a JSON object");
  check("null", 0, "header is null, expected a JSON object");
  check(R"({"a":{"shape":[[[1]]]}})", 0,
        "header nests JSON values 4 levels deep; a safetensors header has at most 3 (header, entry, shape)");
  check(std::string(100, '[') + std::string(100, ']'), 0,
        "header nests JSON values 4 levels deep; a safetensors header has at most 3 (header, entry, shape)");

  // Entries: kind, fields, field types.
  check(R"({"a":3})", 0, R"(tensor 'a': entry is a number, expected an object with "dtype", "shape" and "data_offsets")");
  check(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", 8, R"(tensor 'a': missing field "dtype")");
  check(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", 8, R"(tensor 'a': missing field "shape")");
  check(R"({"a":{"dtype":"F32","shape":[2]}})", 8, R"(tensor 'a': missing field "data_offsets")");
  check(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"offset":0}})", 8,
        R"(tensor 'a': unexpected field 'offset' (an entry has "dtype", "shape" and "data_offsets"))");
  check(R"({"a":{"dtype":5,"shape":[2],"data_offsets":[0,8]}})", 8, R"(tensor 'a': "dtype" is a number, expected a string)");
  check(R"({"mask":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", 2,
        "tensor 'mask': unsupported dtype 'BOOL' (condense reads F32, F64, F16, BF16, I32, I64)");
  check(R"({"ids":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", 2,
        "tensor 'ids': unsupported dtype 'U8' (condense reads F32, F64, F16, BF16, I32, I64)");
  check(R"({"q":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 2,
        "tensor 'q': unsupported dtype 'F8_E4M3' (condense reads F32, F64, F16, BF16, I32, I64)");
  check(R"({"a":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}})", 8,
        "tensor 'a': unknown dtype 'f32' (condense reads F32, F64, F16, BF16, I32, I64)");

  // Shapes.
  check(R"({"a":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", 8,
        R"(tensor 'a': "shape" is a string, expected an array of non-negative integers)");
  check(R"({"a":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]}})", 8,
        "tensor 'a': shape dimension 1 is -1, expected a non-negative integer");
  check(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8,
        "tensor 'a': shape dimension 0 is 2.0, expected a non-negative integer");
  check(R"({"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", 8,
        "tensor 'a': shape dimension 0 is '2', expected a non-negative integer");
  check(R"({"a":{"dtype":"F32","shape":[null],"data_offsets":[0,8]}})", 8,
        "tensor 'a': shape dimension 0 is null, expected a non-negative integer");
  check(R"({"a":{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,8]}})", 8,
        "tensor 'a': shape dimension 0 is 9223372036854775808, expected a non-negative integer");
  check(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8,
        "tensor 'a': shape (4294967296x4294967296) has more elements than a 64-bit size can count");
  check(R"({"a":{"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}})", 0,
        "tensor 'a': shape (0x4294967296x4294967296) has more elements than a 64-bit size can count");
  check(R"({"a":{"dtype":"F32","shape":[2305843009213693952],"data_offsets":[0,8]}})", 8,
        "tensor 'a': shape (2305843009213693952) of F32 has more bytes than a 64-bit size can count");

  // Offsets.
  check(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":8}})", 8,
        R"(tensor 'a': "data_offsets" is 8, expected an array of two integers [begin, end])");
  check(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]}})", 8,
        R"(tensor 'a': "data_offsets" is an array of 3 elements, expected an array of two integers [begin, end])");
  check(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-1,7]}})", 8,
        "tensor 'a': data_offsets [-1, 7] are not two non-negative integers");
  check(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8.0]}})", 8,
        "tensor 'a': data_offsets [0, 8.0] are not two non-negative integers");
  check(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,"8"]}})", 8,
        "tensor 'a': data_offsets [0, '8'] are not two non-negative integers");
  check(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8, "tensor 'a': data_offsets [8, 0] begin after end");
  check(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8,
        "tensor 'a': data_offsets [0, 16] run past the end of the data buffer (8 bytes)");
  check(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551615]}})", 8,
        "tensor 'a': data_offsets [0, 18446744073709551615] run past the end of the data buffer (8 bytes)");
  check(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4,
        "tensor 'a': data_offsets [0, 4] span 4 bytes, but shape (2) of F32 needs 8");
  check(R"({"a":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,8]}})", 8,
        "tensor 'a': data_offsets [0, 8] span 8 bytes, but shape (2x3) of BF16 needs 12");

  // Coverage of the data buffer: overlap, gaps, trailing bytes.
  check(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
        12, "tensors 'a' (data_offsets [0, 8]) and 'b' (data_offsets [4, 12]) overlap");
  check(R"({"b":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})",
        8, "tensors 'b' (data_offsets [0, 8]) and 'a' (data_offsets [0, 8]) overlap");
  check(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
        8, "tensors 'a' (data_offsets [0, 8]) and 'z' (data_offsets [4, 4]) overlap");
  check(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
        20, "bytes [8, 12) of the data buffer belong to no tensor (gap before tensor 'b' at data_offsets [12, 20])");
  check(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12,
        "bytes [0, 4) of the data buffer belong to no tensor (gap before tensor 'a' at data_offsets [4, 12])");
  check(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 12,
        "bytes [8, 12) at the end of the data buffer belong to no tensor");
  check("{}", 4, "bytes [0, 4) at the end of the data buffer belong to no tensor");

  // Duplicates.
  check(R"({"a":)" + ok + R"(,"a":)" + ok + "}", 8, "tensor 'a' appears twice in the header");
  check(R"({"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8,
        "duplicate key 'dtype' in the entry of tensor 'a'");
  check(R"({"__metadata__":{"k":"1","k":"2"}})", 0, R"(duplicate key 'k' in "__metadata__")");
  check(R"({"__metadata__":{},"__metadata__":{}})", 0, R"("__metadata__" appears twice in the header)");

  // Metadata.
  check(R"({"__metadata__":["k"]})", 0, R"("__metadata__" is an array, expected an object mapping strings to strings)");
  check(R"({"__metadata__":"k"})", 0, R"("__metadata__" is a string, expected an object mapping strings to strings)");
  check(R"({"__metadata__":{"k":1}})", 0, R"("__metadata__" value of key 'k' is a number, expected a string)");
  check(R"({"__metadata__":{"k":{"x":"y"}}})", 0, R"("__metadata__" value of key 'k' is an object, expected a string)");

  // Names with control characters and very long names are quoted safely in messages.
  check("{\"a\\nb\":5}", 0, R"(tensor 'a\x0ab': entry is a number, expected an object with "dtype", "shape" and "data_offsets")");
  const std::string long_name(300, 'n');
  check("{\"" + long_name + "\":5}", 0,
        "tensor '" + std::string(200, 'n') +
            R"(...': entry is a number, expected an object with "dtype", "shape" and "data_offsets")");
}

TEST_CASE("safetensors files: load errors name the path, failed saves leave no file behind") {
  const std::string dir = temp_path("files");
  std::filesystem::create_directories(dir);
  const std::string missing = dir + "/missing.safetensors";
  CHECK_THROWS_WITH_AS(load_safetensors(missing), doctest::Contains(("[safetensors] " + missing + ": ").c_str()), Error);
  CHECK_THROWS_WITH_AS(load_safetensors(dir), ("[safetensors] " + dir + ": not a regular file").c_str(), Error);

  // A truncated file on disk is rejected with the path in the message.
  const std::string truncated = dir + "/truncated.safetensors";
  TensorFile f;
  f.tensors.emplace_back("w", tensor<float>({1, 2, 3}));
  auto bytes = serialize_safetensors(f);
  bytes.pop_back();
  write_bytes(truncated, bytes);
  CHECK_THROWS_WITH_AS(load_safetensors(truncated),
                       ("[safetensors] " + truncated +
                        ": tensor 'w': data_offsets [0, 12] run past the end of the data buffer (11 bytes)")
                           .c_str(),
                       Error);
  write_bytes(truncated, {1, 2});
  CHECK_THROWS_WITH_AS(read_safetensors_header(truncated),
                       ("[safetensors] " + truncated + ": file is 2 bytes, shorter than the 8-byte header length").c_str(),
                       Error);

  // Invalid input to the writer: nothing is written, an existing file stays as it was.
  const std::string path = dir + "/model.safetensors";
  save_safetensors(path, f);
  const auto before = read_bytes(path);
  TensorFile dup = f;
  dup.tensors.emplace_back("w", tensor<float>({4}));
  CHECK_THROWS_WITH_AS(save_safetensors(path, dup),
                       ("[safetensors] " + path + ": tensor 'w' appears twice in the file").c_str(), Error);
  TensorFile reserved;
  reserved.tensors.emplace_back("__metadata__", tensor<float>({4}));
  CHECK_THROWS_WITH_AS(save_safetensors(path, reserved),
                       ("[safetensors] " + path + ": a tensor cannot be named \"__metadata__\"").c_str(), Error);
  TensorFile undefined;
  undefined.tensors.emplace_back("u", Tensor<float>());
  CHECK_THROWS_WITH_AS(save_safetensors(path, undefined), ("[safetensors] " + path + ": tensor 'u' is undefined").c_str(),
                       Error);
  TensorFile bad_utf8;
  bad_utf8.tensors.emplace_back("bad\xff", tensor<float>({4}));
  CHECK_THROWS_WITH_AS(save_safetensors(path, bad_utf8),
                       ("[safetensors] " + path + ": tensor name 'bad\xff' is not valid UTF-8").c_str(), Error);
  TensorFile bad_meta = f;
  bad_meta.metadata["k"] = "\xc3";
  CHECK_THROWS_WITH_AS(serialize_safetensors(bad_meta), "[safetensors] metadata value '\xc3' is not valid UTF-8", Error);
  CHECK(read_bytes(path) == before);
  CHECK_THROWS_WITH_AS(save_safetensors(dir + "/no/such/dir/x.safetensors", f),
                       doctest::Contains("cannot open"), Error);
  // No temporary files are left next to the target.
  std::size_t entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    INFO(e.path().string());
    CHECK(e.path().string().find(".tmp-") == std::string::npos);
    ++entries;
  }
  CHECK(entries == 2);  // truncated.safetensors, model.safetensors
  // Saving over an existing file replaces it.
  TensorFile g;
  g.tensors.emplace_back("v", tensor<double>({5, 6}));
  save_safetensors(path, g);
  CHECK(same_file(load_safetensors(path), g));
  std::filesystem::remove_all(dir);
}

TEST_CASE("to_float_tensor, get_tensor and find_tensor") {
  TensorFile f;
  f.tensors.emplace_back("h", Tensor<float16>(tensor<float>({0.5f, -1.25f}).cast<float16>()));
  f.tensors.emplace_back("b", Tensor<bfloat16>(tensor<float>({3.0f, 0.125f}).cast<bfloat16>()));
  f.tensors.emplace_back("d", tensor<double>({1.0 / 3.0}));
  f.tensors.emplace_back("i", tensor<std::int64_t>({1, 2}));
  CHECK(testing::values(to_float_tensor<float>(f.tensors[0].second)) == std::vector<double>{0.5, -1.25});
  CHECK(testing::values(to_float_tensor<double>(f.tensors[1].second)) == std::vector<double>{3.0, 0.125});
  CHECK(to_float_tensor<float>(f.tensors[2].second).item() == static_cast<float>(1.0 / 3.0));
  const auto same = to_float_tensor<double>(f.tensors[2].second);
  CHECK(same.storage().same_block(std::get<Tensor<double>>(f.tensors[2].second).storage()));  // no copy
  CHECK_THROWS_WITH_AS(to_float_tensor<float>(f.tensors[3].second),
                       "[to_float_tensor] expected a floating tensor (float16, bfloat16, float32, float64), got int64 "
                       "(2) cpu",
                       Error);
  CHECK(find_tensor(f, "d") == &f.tensors[2].second);
  CHECK(find_tensor(f, "nope") == nullptr);
  CHECK(element_type(f.tensors[1].second) == DType::BFloat16);
  CHECK(describe(f.tensors[3].second) == "int64 (2) cpu");
  CHECK_THROWS_WITH_AS(get_tensor<float>(f, "nope"), "[get_tensor] no tensor named 'nope' in the file", Error);
  CHECK_THROWS_WITH_AS(get_tensor<float>(f, "d"), "[get_tensor] tensor 'd' is float64 (1) cpu, expected float32", Error);
}

TEST_CASE("load_into copies in place, converting dtypes, and checks names and shapes first") {
  Generator gen(7);
  auto w = randn<float>({3, 2}, gen).requires_grad_();
  auto b = zeros<float>({2}).requires_grad_();
  const auto w_alias = w;  // an optimizer's handle to the same storage
  const float* w_data = w.data();
  NamedTensors<float> params{{"layer.weight", w}, {"layer.bias", b}};

  TensorFile f;
  f.tensors.emplace_back("layer.bias", Tensor<bfloat16>(tensor<float>({0.5f, -1.5f}).cast<bfloat16>()));
  f.tensors.emplace_back("layer.weight", tensor<double>({1, 2, 3, 4, 5, 6}, {3, 2}));
  load_into(params, f);
  CHECK(w.data() == w_data);  // same storage
  CHECK(testing::values(w_alias) == std::vector<double>{1, 2, 3, 4, 5, 6});
  CHECK(testing::values(b) == std::vector<double>{0.5, -1.5});
  CHECK(w.requires_grad());

  // Strided destination: a transposed view is written element by element.
  auto base = zeros<double>({2, 3});
  NamedTensors<double> strided{{"layer.weight", base.transpose(0, 1)}};
  TensorFile only_w;
  only_w.tensors.push_back(f.tensors[1]);
  load_into(strided, only_w);
  CHECK(testing::values(base) == std::vector<double>{1, 3, 5, 2, 4, 6});

  // Errors; nothing is written when any check fails.
  const auto before = w.to_vector();
  TensorFile bad;
  bad.tensors.emplace_back("layer.weight", tensor<float>({1, 2, 3, 4, 5, 6}, {2, 3}));
  bad.tensors.emplace_back("layer.bias", tensor<float>({1, 2}));
  CHECK_THROWS_WITH_AS(load_into(params, bad), "[load] tensor 'layer.weight': file has shape (2x3), model has (3x2)",
                       Error);
  CHECK(w.to_vector() == before);

  TensorFile partial;
  partial.tensors.emplace_back("layer.weight", tensor<float>({1, 2, 3, 4, 5, 6}, {3, 2}));
  partial.tensors.emplace_back("extra.a", tensor<float>({1}));
  partial.tensors.emplace_back("extra.b", tensor<float>({1}));
  CHECK_THROWS_WITH_AS(load_into(params, partial),
                       "[load] 1 tensor of the model missing from the file: 'layer.bias'; 2 unexpected tensors in the "
                       "file: 'extra.a', 'extra.b'",
                       Error);
  CHECK_THROWS_WITH_AS(load_into(params, partial, false),
                       "[load] 1 tensor of the model missing from the file: 'layer.bias'", Error);
  CHECK(w.to_vector() == before);
  partial.tensors.emplace_back("layer.bias", tensor<float>({7, 8}));
  CHECK_THROWS_WITH_AS(load_into(params, partial), "[load] 2 unexpected tensors in the file: 'extra.a', 'extra.b'",
                       Error);
  load_into(params, partial, /*strict=*/false);
  CHECK(testing::values(b) == std::vector<double>{7, 8});

  TensorFile ints;
  ints.tensors.emplace_back("layer.weight", zeros<std::int32_t>({3, 2}));
  ints.tensors.emplace_back("layer.bias", zeros<float>({2}));
  CHECK_THROWS_WITH_AS(load_into(params, ints),
                       "[load] tensor 'layer.weight': file has int32, model has float32 (only floating tensors convert)",
                       Error);
  TensorFile twice = partial;
  twice.tensors.emplace_back("layer.bias", tensor<float>({7, 8}));
  CHECK_THROWS_WITH_AS(load_into(params, twice), "[load] tensor 'layer.bias' appears twice in the file", Error);
  NamedTensors<float> dup{{"x", w}, {"x", b}};
  CHECK_THROWS_WITH_AS(load_into(dup, partial), "[load] destination tensor 'x' is listed twice", Error);

  // Many missing names are summarised.
  NamedTensors<float> many;
  for (int i = 0; i < 10; ++i) many.emplace_back("p" + std::to_string(i), zeros<float>({1}));
  CHECK_THROWS_WITH_AS(load_into(many, TensorFile{}),
                       "[load] 10 tensors of the model missing from the file: 'p0', 'p1', 'p2', 'p3', 'p4', 'p5', 'p6', "
                       "'p7' and 2 more",
                       Error);

  // A load through a safetensors file round-trips the parameters bit for bit.
  TensorFile out;
  for (const auto& [name, t] : params) out.tensors.emplace_back(name, t);
  const auto bytes = serialize_safetensors(out);
  auto w2 = zeros<float>({3, 2});
  auto b2 = zeros<float>({2});
  load_into(NamedTensors<float>{{"layer.weight", w2}, {"layer.bias", b2}}, parse_safetensors(bytes, "mem"));
  CHECK(w2.to_vector() == w.to_vector());
  CHECK(b2.to_vector() == b.to_vector());
}

}  // namespace test_safetensors
