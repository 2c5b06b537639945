// The safetensors file format: reader (from memory or a file) and writer (to memory or,
// atomically, to a file). Layout: an 8-byte little-endian header length N, N bytes of JSON
// header mapping each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} plus
// an optional "__metadata__" object of strings, then the data buffer (little-endian,
// row-major, tensors back to back). Dtypes F32, F64, F16, BF16, I32 and I64 are read and
// written; every length, offset and field is validated, and every problem throws a
// condense::Error "[safetensors] <file>: ..." naming the tensor and the offending numbers.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "condense/autograd/node.hpp"
#include "condense/core/tensor_type.hpp"
#include "condense/io/any_tensor.hpp"

namespace condense::io {

static_assert(std::endian::native == std::endian::little,
              "condense's safetensors reader and writer assume a little-endian host");

/// Largest header a reader accepts (the limit of the reference implementation): 100 MB.
inline constexpr std::uint64_t safetensors_max_header_bytes = 100'000'000;

/// The safetensors dtype string of `dtype` ("F32", "F64", "F16", "BF16", "I32", "I64").
/// Bool tensors cannot be stored and throw condense::Error.
inline std::string_view safetensors_dtype(DType dtype) {
  switch (dtype) {
    case DType::Float32: return "F32";
    case DType::Float64: return "F64";
    case DType::Float16: return "F16";
    case DType::BFloat16: return "BF16";
    case DType::Int32: return "I32";
    case DType::Int64: return "I64";
    case DType::Bool: break;
  }
  fail("safetensors", "cannot store ", dtype_name(dtype), " tensors (supported: F32, F64, F16, BF16, I32, I64)");
}

/// One tensor entry of a validated header: its dtype, shape and byte range in the data buffer.
struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::Float32;
  Shape shape;
  std::uint64_t begin = 0;  ///< first byte in the data buffer
  std::uint64_t end = 0;    ///< one past the last byte
};

/// A validated safetensors header: entries in header order, metadata, and the sizes of the
/// header and the data buffer (the buffer starts at byte 8 + header_bytes of the file).
struct SafetensorsHeader {
  std::vector<SafetensorsEntry> tensors;
  std::map<std::string, std::string> metadata;
  std::uint64_t header_bytes = 0;
  std::uint64_t data_bytes = 0;
};

namespace detail {

using ojson = nlohmann::ordered_json;

/// "a string", "an array", ... for messages about a JSON value's type.
inline std::string json_kind(const ojson& j) {
  switch (j.type()) {
    case ojson::value_t::object: return "an object";
    case ojson::value_t::array: return "an array";
    case ojson::value_t::string: return "a string";
    case ojson::value_t::boolean: return "a boolean";
    case ojson::value_t::null: return "null";
    case ojson::value_t::number_integer:
    case ojson::value_t::number_unsigned:
    case ojson::value_t::number_float: return "a number";
    default: return "an unsupported value";
  }
}

/// A short rendering of a JSON value for messages: scalars as written (long strings cut),
/// containers by kind and size.
inline std::string json_text(const ojson& j) {
  if (j.is_array()) return "an array of " + std::to_string(j.size()) + " elements";
  if (j.is_object()) return "an object";
  if (j.is_string()) return quote_name(j.get_ref<const std::string&>());
  std::string s = j.dump();  // numbers, booleans, null: never long, never throws
  return s;
}

/// Reads a JSON value that must be an integer in [0, max]; nullopt otherwise.
inline std::optional<std::uint64_t> json_uint(const ojson& j, std::uint64_t max) {
  if (j.is_number_unsigned()) {
    const auto v = j.get<std::uint64_t>();
    if (v <= max) return v;
  } else if (j.is_number_integer()) {
    const auto v = j.get<std::int64_t>();
    if (v >= 0 && static_cast<std::uint64_t>(v) <= max) return static_cast<std::uint64_t>(v);
  }
  return std::nullopt;
}

/// The DType of a safetensors dtype string; throws for known dtypes condense cannot hold
/// ("unsupported dtype") and for unknown strings.
inline DType parse_dtype(const std::string& where, const std::string& tensor, const std::string& s) {
  if (s == "F32") return DType::Float32;
  if (s == "F64") return DType::Float64;
  if (s == "F16") return DType::Float16;
  if (s == "BF16") return DType::BFloat16;
  if (s == "I32") return DType::Int32;
  if (s == "I64") return DType::Int64;
  static constexpr std::string_view known[] = {"BOOL",    "U8",      "I8",      "I16",     "U16",  "U32",
                                               "U64",     "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4",   "F6_E2M3",
                                               "F6_E3M2", "C64",     "F8_E4M3FNUZ", "F8_E5M2FNUZ"};
  for (auto k : known)
    if (s == k)
      fail("safetensors", where, "tensor ", quote_name(tensor), ": unsupported dtype ", quote_name(s),
           " (condense reads F32, F64, F16, BF16, I32, I64)");
  fail("safetensors", where, "tensor ", quote_name(tensor), ": unknown dtype ", quote_name(s),
       " (condense reads F32, F64, F16, BF16, I32, I64)");
}

/// Parse-time guard for the header JSON: rejects nesting deeper than a safetensors header
/// has (root object > entry > shape array) and duplicate keys, which a JSON object would
/// otherwise silently collapse.
class HeaderGuard {
 public:
  explicit HeaderGuard(std::string where) : where_(std::move(where)) {}

  bool operator()(int depth, ojson::parse_event_t event, ojson& parsed) {
    switch (event) {
      case ojson::parse_event_t::object_start:
      case ojson::parse_event_t::array_start:
        CONDENSE_CHECK(depth < 3, "safetensors", where_, "header nests JSON values ", depth + 1,
                       " levels deep; a safetensors header has at most 3 (header, entry, shape)");
        if (event == ojson::parse_event_t::object_start) {
          keys_.emplace_back(std::unordered_set<std::string>{});
        } else {
          keys_.emplace_back(std::nullopt);
        }
        break;
      case ojson::parse_event_t::object_end:
      case ojson::parse_event_t::array_end:
        if (!keys_.empty()) keys_.pop_back();
        break;
      case ojson::parse_event_t::key: {
        const auto& key = parsed.get_ref<const std::string&>();
        if (!keys_.empty() && keys_.back()) {
          if (keys_.size() == 1) {
            CONDENSE_CHECK(keys_.back()->insert(key).second, "safetensors", where_,
                           key == "__metadata__" ? std::string("\"__metadata__\"") : "tensor " + quote_name(key),
                           " appears twice in the header");
            entry_ = key;
          } else {
            CONDENSE_CHECK(keys_.back()->insert(key).second, "safetensors", where_, "duplicate key ",
                           quote_name(key), " in ",
                           entry_ == "__metadata__" ? std::string("\"__metadata__\"")
                                                    : "the entry of tensor " + quote_name(entry_));
          }
        }
        break;
      }
      case ojson::parse_event_t::value: break;
    }
    return true;
  }

 private:
  std::string where_;
  std::string entry_;
  std::vector<std::optional<std::unordered_set<std::string>>> keys_;
};

/// Validates one tensor entry of the header and returns it.
inline SafetensorsEntry parse_entry(const std::string& where, const std::string& name, const ojson& v,
                                    std::uint64_t data_bytes) {
  const std::string tensor = "tensor " + quote_name(name) + ": ";
  CONDENSE_CHECK(v.is_object(), "safetensors", where, tensor, "entry is ", json_kind(v),
                 ", expected an object with \"dtype\", \"shape\" and \"data_offsets\"");
  for (const auto& item : v.items()) {
    const auto& key = item.key();
    CONDENSE_CHECK(key == "dtype" || key == "shape" || key == "data_offsets", "safetensors", where, tensor,
                   "unexpected field ", quote_name(key), " (an entry has \"dtype\", \"shape\" and \"data_offsets\")");
  }
  for (const char* field : {"dtype", "shape", "data_offsets"})
    CONDENSE_CHECK(v.contains(field), "safetensors", where, tensor, "missing field \"", field, "\"");

  SafetensorsEntry entry;
  entry.name = name;
  const ojson& dtype = v.at("dtype");
  CONDENSE_CHECK(dtype.is_string(), "safetensors", where, tensor, "\"dtype\" is ", json_kind(dtype),
                 ", expected a string");
  entry.dtype = parse_dtype(where, name, dtype.get_ref<const std::string&>());

  const ojson& shape = v.at("shape");
  CONDENSE_CHECK(shape.is_array(), "safetensors", where, tensor, "\"shape\" is ", json_kind(shape),
                 ", expected an array of non-negative integers");
  std::vector<std::int64_t> dims;
  dims.reserve(shape.size());
  for (std::size_t i = 0; i < shape.size(); ++i) {
    const auto d = json_uint(shape[i], static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()));
    CONDENSE_CHECK(d.has_value(), "safetensors", where, tensor, "shape dimension ", i, " is ", json_text(shape[i]),
                   ", expected a non-negative integer");
    dims.push_back(static_cast<std::int64_t>(*d));
  }
  entry.shape = Shape(std::move(dims));
  // The element count and byte size must fit in int64 (zero extents aside, so that strides
  // and partial products stay representable too).
  std::int64_t numel = 1;
  bool has_zero = false;
  const auto dsize = static_cast<std::int64_t>(dtype_size(entry.dtype));
  for (auto d : entry.shape) {
    if (d == 0) {
      has_zero = true;
      continue;
    }
    CONDENSE_CHECK(!__builtin_mul_overflow(numel, d, &numel), "safetensors", where, tensor, "shape ", entry.shape,
                   " has more elements than a 64-bit size can count");
  }
  std::int64_t bytes = 0;
  CONDENSE_CHECK(!__builtin_mul_overflow(numel, dsize, &bytes), "safetensors", where, tensor, "shape ", entry.shape,
                 " of ", dtype.get_ref<const std::string&>(), " has more bytes than a 64-bit size can count");
  if (has_zero) bytes = 0;

  const ojson& offsets = v.at("data_offsets");
  CONDENSE_CHECK(offsets.is_array() && offsets.size() == 2, "safetensors", where, tensor,
                 "\"data_offsets\" is ", json_text(offsets), ", expected an array of two integers [begin, end]");
  const auto begin = json_uint(offsets[0], std::numeric_limits<std::uint64_t>::max());
  const auto end = json_uint(offsets[1], std::numeric_limits<std::uint64_t>::max());
  CONDENSE_CHECK(begin && end, "safetensors", where, tensor, "data_offsets [", json_text(offsets[0]), ", ",
                 json_text(offsets[1]), "] are not two non-negative integers");
  entry.begin = *begin;
  entry.end = *end;
  CONDENSE_CHECK(entry.begin <= entry.end, "safetensors", where, tensor, "data_offsets [", entry.begin, ", ",
                 entry.end, "] begin after end");
  CONDENSE_CHECK(entry.end <= data_bytes, "safetensors", where, tensor, "data_offsets [", entry.begin, ", ",
                 entry.end, "] run past the end of the data buffer (", data_bytes, " bytes)");
  CONDENSE_CHECK(entry.end - entry.begin == static_cast<std::uint64_t>(bytes), "safetensors", where, tensor,
                 "data_offsets [", entry.begin, ", ", entry.end, "] span ", entry.end - entry.begin,
                 " bytes, but shape ", entry.shape, " of ", dtype.get_ref<const std::string&>(), " needs ", bytes);
  return entry;
}

/// "<what>: " (or "" for an empty label), the prefix of every message about one file.
inline std::string where_of(const std::string& what) { return what.empty() ? std::string() : what + ": "; }

/// Validates the 8-byte length prefix against the file size; returns the header length.
inline std::uint64_t check_prefix(const std::string& where, const std::uint8_t* prefix, std::uint64_t file_bytes) {
  std::uint64_t n = 0;
  std::memcpy(&n, prefix, sizeof n);  // little-endian host (asserted above)
  CONDENSE_CHECK(n <= safetensors_max_header_bytes, "safetensors", where, "header length ", n,
                 " is larger than the ", safetensors_max_header_bytes, "-byte limit");
  CONDENSE_CHECK(n <= file_bytes - 8, "safetensors", where, "header length ", n, " runs past the end of the file (",
                 file_bytes, " bytes, so at most ", file_bytes - 8, " header bytes)");
  return n;
}

/// Allocates the tensor of `entry` (uninitialised) and returns it with its data pointer.
inline std::pair<AnyTensor, void*> make_tensor(const SafetensorsEntry& entry) {
  auto make = [&](auto tag) -> std::pair<AnyTensor, void*> {
    using T = decltype(tag);
    auto t = Tensor<T>::empty(entry.shape);
    void* p = t.data();
    return {AnyTensor(std::move(t)), p};
  };
  switch (entry.dtype) {
    case DType::Float32: return make(float{});
    case DType::Float64: return make(double{});
    case DType::Int32: return make(std::int32_t{});
    case DType::Int64: return make(std::int64_t{});
    case DType::BFloat16: return make(bfloat16{});
    case DType::Float16: return make(float16{});
    case DType::Bool: break;
  }
  fail("safetensors", "internal: no tensor type for ", dtype_name(entry.dtype));
}

/// The serialised header (JSON padded with spaces to a multiple of 8 bytes) of `file` with
/// tensors back to back in file order; validates names, tensors and UTF-8.
inline std::string build_header(const TensorFile& file, const std::string& where) {
  ojson header = ojson::object();
  auto utf8 = [&](const std::string& s, const char* role) {
    try {
      (void)ojson(s).dump(-1, ' ', false, ojson::error_handler_t::strict);
    } catch (const nlohmann::json::exception&) {
      fail("safetensors", where, role, " ", quote_name(s), " is not valid UTF-8");
    }
  };
  if (!file.metadata.empty()) {
    ojson meta = ojson::object();
    for (const auto& [k, v] : file.metadata) {
      utf8(k, "metadata key");
      utf8(v, "metadata value");
      meta[k] = v;
    }
    header["__metadata__"] = std::move(meta);
  }
  std::unordered_set<std::string_view> names;
  std::uint64_t offset = 0;
  for (const auto& [name, t] : file.tensors) {
    CONDENSE_CHECK(name != "__metadata__", "safetensors", where, "a tensor cannot be named \"__metadata__\"");
    CONDENSE_CHECK(names.insert(name).second, "safetensors", where, "tensor ", quote_name(name),
                   " appears twice in the file");
    utf8(name, "tensor name");
    const bool defined = std::visit([](const auto& x) { return x.defined(); }, t);
    CONDENSE_CHECK(defined, "safetensors", where, "tensor ", quote_name(name), " is undefined");
    const DType dtype = element_type(t);
    const Shape shape = shape_of(t);
    const auto bytes = static_cast<std::uint64_t>(numel_of(shape)) * dtype_size(dtype);
    ojson entry = ojson::object();
    entry["dtype"] = std::string(safetensors_dtype(dtype));
    entry["shape"] = shape.vec();
    entry["data_offsets"] = ojson::array({offset, offset + bytes});
    header[name] = std::move(entry);
    offset += bytes;
  }
  std::string text = header.dump(-1, ' ', false, ojson::error_handler_t::strict);
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

/// Calls sink(pointer, bytes) with the little-endian bytes of `t` (row-major, any device
/// or layout).
template <class Sink>
void write_tensor_bytes(const AnyTensor& t, Sink&& sink) {
  std::visit(
      [&](const auto& x) {
        using U = typename std::decay_t<decltype(x)>::value_type;
        const Tensor<U> host = x.detach().cpu().contiguous();
        const auto bytes = static_cast<std::size_t>(host.numel()) * sizeof(U);
        if (bytes) sink(static_cast<const void*>(host.data()), bytes);
      },
      t);
}

}  // namespace detail

/// Parses and validates a safetensors header: `json` is the N header bytes, `data_bytes`
/// the size of the data buffer that follows. Checks that the header is a JSON object (at
/// most 3 levels deep, no duplicate keys), every entry has exactly a known, supported
/// "dtype" string, a "shape" of non-negative integers whose byte size fits 64 bits, and
/// "data_offsets" [begin, end] with begin <= end <= data_bytes and end - begin == the
/// byte size; that the tensors cover the data buffer back to back with no overlap, gap or
/// trailing bytes; and that "__metadata__" (optional, may be null) maps strings to strings.
/// `what` (a file name or label) starts every message.
inline SafetensorsHeader parse_safetensors_header(std::span<const std::uint8_t> json, std::uint64_t data_bytes,
                                                  const std::string& what) {
  const std::string where = detail::where_of(what);
  detail::ojson root;
  try {
    const char* first = reinterpret_cast<const char*>(json.data());
    root = detail::ojson::parse(first, first + json.size(), detail::HeaderGuard(where));
  } catch (const nlohmann::json::exception& e) {
    fail("safetensors", where, "header is not valid JSON: ", e.what());
  }
  CONDENSE_CHECK(root.is_object(), "safetensors", where, "header is ", detail::json_kind(root),
                 ", expected a JSON object");
  SafetensorsHeader header;
  header.header_bytes = json.size();
  header.data_bytes = data_bytes;
  for (const auto& item : root.items()) {
    const std::string& name = item.key();
    const detail::ojson& value = item.value();
    if (name == "__metadata__") {
      if (value.is_null()) continue;
      CONDENSE_CHECK(value.is_object(), "safetensors", where, "\"__metadata__\" is ", detail::json_kind(value),
                     ", expected an object mapping strings to strings");
      for (const auto& kv : value.items()) {
        CONDENSE_CHECK(kv.value().is_string(), "safetensors", where, "\"__metadata__\" value of key ",
                       detail::quote_name(kv.key()), " is ", detail::json_kind(kv.value()), ", expected a string");
        header.metadata.emplace(kv.key(), kv.value().get<std::string>());
      }
      continue;
    }
    header.tensors.push_back(detail::parse_entry(where, name, value, data_bytes));
  }
  // The tensors must tile the data buffer exactly: sorted by offset, each starts where the
  // previous one ended, and the last ends at the end of the buffer.
  std::vector<const SafetensorsEntry*> order;
  order.reserve(header.tensors.size());
  for (const auto& e : header.tensors) order.push_back(&e);
  std::stable_sort(order.begin(), order.end(), [](const SafetensorsEntry* a, const SafetensorsEntry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  std::uint64_t cursor = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const SafetensorsEntry* e : order) {
    if (e->begin < cursor)
      fail("safetensors", where, "tensors ", detail::quote_name(previous->name), " (data_offsets [", previous->begin, ", ",
           previous->end, "]) and ", detail::quote_name(e->name), " (data_offsets [", e->begin, ", ", e->end,
           "]) overlap");
    CONDENSE_CHECK(e->begin == cursor, "safetensors", where, "bytes [", cursor, ", ", e->begin,
                   ") of the data buffer belong to no tensor (gap before tensor ", detail::quote_name(e->name),
                   " at data_offsets [", e->begin, ", ", e->end, "])");
    cursor = e->end;
    previous = e;
  }
  CONDENSE_CHECK(cursor == data_bytes, "safetensors", where, "bytes [", cursor, ", ", data_bytes,
                 ") at the end of the data buffer belong to no tensor");
  return header;
}

/// Parses a whole safetensors file held in memory (the fuzzing entry point). Tensors come
/// back in header order, each in its own contiguous CPU storage. `what` names the source
/// in messages. Every malformed input throws condense::Error; nothing is read out of bounds.
inline TensorFile parse_safetensors(std::span<const std::uint8_t> bytes, const std::string& what) {
  const std::string where = detail::where_of(what);
  CONDENSE_CHECK(bytes.size() >= 8, "safetensors", where, "file is ", bytes.size(),
                 " bytes, shorter than the 8-byte header length");
  const std::uint64_t n = detail::check_prefix(where, bytes.data(), bytes.size());
  const SafetensorsHeader header =
      parse_safetensors_header(bytes.subspan(8, static_cast<std::size_t>(n)), bytes.size() - 8 - n, what);
  const std::uint8_t* data = bytes.data() + 8 + n;
  TensorFile file;
  file.metadata = header.metadata;
  file.tensors.reserve(header.tensors.size());
  for (const auto& e : header.tensors) {
    auto [t, p] = detail::make_tensor(e);
    if (e.end > e.begin) std::memcpy(p, data + e.begin, static_cast<std::size_t>(e.end - e.begin));
    file.tensors.emplace_back(e.name, std::move(t));
  }
  return file;
}

namespace detail {

/// Opens `path` for reading and returns the stream and the file size.
inline std::pair<std::ifstream, std::uint64_t> open_for_reading(const std::string& path) {
  std::error_code ec;
  CONDENSE_CHECK(std::filesystem::is_regular_file(path, ec), "safetensors", path, ": ",
                 ec ? "cannot read the file (" + ec.message() + ")" : std::string("not a regular file"));
  const auto size = std::filesystem::file_size(path, ec);
  CONDENSE_CHECK(!ec, "safetensors", path, ": cannot read the file size (", ec.message(), ")");
  std::ifstream in(path, std::ios::binary);
  CONDENSE_CHECK(in.is_open(), "safetensors", path, ": cannot open the file for reading");
  return {std::move(in), static_cast<std::uint64_t>(size)};
}

/// Reads `bytes` bytes at `offset` of `in` into `dst`; throws on a short read.
inline void read_at(std::ifstream& in, const std::string& path, std::uint64_t offset, void* dst, std::uint64_t bytes) {
  in.seekg(static_cast<std::streamoff>(offset));
  in.read(static_cast<char*>(dst), static_cast<std::streamsize>(bytes));
  CONDENSE_CHECK(in.good() && static_cast<std::uint64_t>(in.gcount()) == bytes, "safetensors", path, ": reading ",
                 bytes, " bytes at offset ", offset, " failed (file changed or unreadable)");
}

/// Reads and validates the length prefix and header of an open file.
inline SafetensorsHeader read_header(std::ifstream& in, const std::string& path, std::uint64_t size) {
  const std::string where = where_of(path);
  CONDENSE_CHECK(size >= 8, "safetensors", where, "file is ", size, " bytes, shorter than the 8-byte header length");
  std::uint8_t prefix[8];
  read_at(in, path, 0, prefix, 8);
  const std::uint64_t n = check_prefix(where, prefix, size);
  std::vector<std::uint8_t> json(static_cast<std::size_t>(n));
  if (n) read_at(in, path, 8, json.data(), n);
  return parse_safetensors_header(json, size - 8 - n, path);
}

}  // namespace detail

/// Reads and validates only the header of the safetensors file at `path` (names, dtypes,
/// shapes, offsets, metadata), without reading tensor data.
inline SafetensorsHeader read_safetensors_header(const std::string& path) {
  auto [in, size] = detail::open_for_reading(path);
  return detail::read_header(in, path, size);
}

/// Loads the safetensors file at `path`: validates it completely (see
/// parse_safetensors_header), then reads each tensor straight into its own CPU storage.
/// Tensors come back in header order. Messages name the path.
inline TensorFile load_safetensors(const std::string& path) {
  auto [in, size] = detail::open_for_reading(path);
  const SafetensorsHeader header = detail::read_header(in, path, size);
  const std::uint64_t data_start = 8 + header.header_bytes;
  TensorFile file;
  file.metadata = header.metadata;
  file.tensors.reserve(header.tensors.size());
  for (const auto& e : header.tensors) {
    auto [t, p] = detail::make_tensor(e);
    if (e.end > e.begin) detail::read_at(in, path, data_start + e.begin, p, e.end - e.begin);
    file.tensors.emplace_back(e.name, std::move(t));
  }
  return file;
}

/// The bytes of `file` in safetensors format: "__metadata__" first (when there is any),
/// then the tensors in TensorFile order, back to back; the header is padded with spaces to
/// a multiple of 8 bytes. Tensors may live on any device and be strided. Throws
/// condense::Error for duplicate or invalid (non-UTF-8, "__metadata__") names, undefined
/// tensors and bool tensors.
inline std::vector<std::uint8_t> serialize_safetensors(const TensorFile& file) {
  const std::string header = detail::build_header(file, "");
  std::vector<std::uint8_t> out(8 + header.size());
  const std::uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  for (const auto& [name, t] : file.tensors)
    detail::write_tensor_bytes(t, [&](const void* p, std::size_t bytes) {
      const auto* b = static_cast<const std::uint8_t*>(p);
      out.insert(out.end(), b, b + bytes);
    });
  return out;
}

/// Writes `file` to `path` in safetensors format (layout as serialize_safetensors). The
/// bytes go to a temporary file next to `path` that is renamed over it once complete, so a
/// failure never leaves a half-written file at `path`; the temporary is removed on error.
inline void save_safetensors(const std::string& path, const TensorFile& file) {
  const std::string where = detail::where_of(path);
  const std::string header = detail::build_header(file, where);
  static std::atomic<std::uint64_t> counter{0};
  const std::string tmp = path + ".tmp-" +
                          std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + "-" +
                          std::to_string(++counter);
  try {
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      CONDENSE_CHECK(out.is_open(), "safetensors", where, "cannot open ", tmp, " for writing");
      const std::uint64_t n = header.size();
      out.write(reinterpret_cast<const char*>(&n), 8);
      out.write(header.data(), static_cast<std::streamsize>(header.size()));
      for (const auto& [name, t] : file.tensors)
        detail::write_tensor_bytes(t, [&](const void* p, std::size_t bytes) {
          out.write(static_cast<const char*>(p), static_cast<std::streamsize>(bytes));
        });
      out.flush();
      CONDENSE_CHECK(out.good(), "safetensors", where, "writing ", tmp, " failed (disk full or unwritable)");
      out.close();
      CONDENSE_CHECK(!out.fail(), "safetensors", where, "closing ", tmp, " failed");
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    CONDENSE_CHECK(!ec, "safetensors", where, "cannot rename ", tmp, " to ", path, " (", ec.message(), ")");
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw;
  }
}

}  // namespace condense::io

// Brings in the rest of the core op set (definitions used by the code above).
#include "condense/core/tensor.hpp"
