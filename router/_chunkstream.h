// The native output stage of a DoGet (router/outstream.py): a RecordBatchReader fed chunk by
// chunk from a Python iterator, which pyarrow's C++ RecordBatchStream writes to the client.
//
// Why: pyarrow's GeneratorStream calls into Python for every record batch it sends, even
// while draining a Table (it takes the GIL, releases it around the C++ write and takes it
// back), and the protocol sends one block per batch. Under many concurrent streams those
// GIL hand-overs, not the work, were the router's cost (bench/README.md, "Sixth round").
// This reader takes the GIL once per item: a Table's batches then go out without it.
//
// Items of the source iterator:
//   Rows                 its batches as they are, one by one (router.outstream.Run: a chunk
//                        of downstream rows; no Table is built nor sliced). The reader
//                        takes them over (the Rows is left empty), so they are freed in
//                        its gRPC thread without the GIL once sent, whoever still holds
//                        the Python object;
//   pyarrow.Table        its batches, one by one (as pyarrow's own Table streams do);
//   pyarrow.RecordBatch  itself;
//   (code, message, extra_info)  the stream ends with this Flight error: code is an
//                        arrow::flight::FlightStatusCode, or -1 for an UNKNOWN status with
//                        the message as is (what pyarrow sends for a base FlightError).
// Every batch must have the declared schema (metadata aside), as GeneratorStream requires.
// An exception escaping the source, or any other item, is a bug on the Python side: the
// stream ends with INTERNAL and a fixed text (never a traceback); the exception is reported
// to Python's unraisable hook.
#pragma once

#include <Python.h>

#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <arrow/api.h>
#include <arrow/flight/types.h>
#include <arrow/python/pyarrow.h>

namespace router_native {

using Batches = std::vector<std::shared_ptr<arrow::RecordBatch>>;

// Set by _chunkstream.pyx: if `item` is a Rows, moves its batches into `out` (emptying it)
// and returns true. Called with the GIL held.
using TakeRowsFn = bool (*)(PyObject* item, Batches* out);
inline TakeRowsFn take_rows = nullptr;
inline void SetTakeRows(TakeRowsFn fn) { take_rows = fn; }

class ChunkReader : public arrow::RecordBatchReader {
 public:
  // Called with the GIL held.
  ChunkReader(PyObject* source, std::shared_ptr<arrow::Schema> schema)
      : source_(source), schema_(std::move(schema)) {
    Py_INCREF(source_);
  }

  // May run in a gRPC thread without the GIL; dropping the source closes a generator
  // (its finally blocks run: the stream's accounting).
  ~ChunkReader() override { Release(); }

  std::shared_ptr<arrow::Schema> schema() const override { return schema_; }

  arrow::Status ReadNext(std::shared_ptr<arrow::RecordBatch>* out) override {
    while (true) {
      if (next_ < pending_.size()) {
        *out = std::move(pending_[next_++]);
        return arrow::Status::OK();
      }
      if (current_ != nullptr) {
        ARROW_RETURN_NOT_OK(current_->ReadNext(out));
        if (*out != nullptr) return arrow::Status::OK();
        current_.reset();
      }
      if (source_ == nullptr) {
        *out = nullptr;
        return arrow::Status::OK();
      }
      PyGILState_STATE state = PyGILState_Ensure();
      arrow::Status status = Pull(out);
      PyGILState_Release(state);
      ARROW_RETURN_NOT_OK(status);
      if (*out != nullptr) return arrow::Status::OK();
    }
  }

 private:
  void Release() {
    if (source_ != nullptr && Py_IsInitialized()) {
      PyGILState_STATE state = PyGILState_Ensure();
      Py_CLEAR(source_);
      PyGILState_Release(state);
    }
    source_ = nullptr;
  }

  static arrow::Status Bug(const char* what) {
    return arrow::flight::MakeFlightError(arrow::flight::FlightStatusCode::Internal,
                                          std::string("internal error (") + what + ")");
  }

  // With the GIL: the next item of the source, as a batch in *out, a Table in current_,
  // the end (source_ cleared, *out null) or an error status (source_ cleared).
  arrow::Status Pull(std::shared_ptr<arrow::RecordBatch>* out) {
    *out = nullptr;
    PyObject* item = PyIter_Next(source_);
    if (item == nullptr) {
      if (PyErr_Occurred()) {
        PyErr_WriteUnraisable(source_);
        Py_CLEAR(source_);
        return Bug("stream source");
      }
      Py_CLEAR(source_);
      return arrow::Status::OK();
    }
    arrow::Status status = Take(item, out);
    Py_DECREF(item);
    if (!status.ok()) Py_CLEAR(source_);
    return status;
  }

  arrow::Status Take(PyObject* item, std::shared_ptr<arrow::RecordBatch>* out) {
    pending_.clear();
    next_ = 0;
    if (take_rows != nullptr && take_rows(item, &pending_)) {
      for (const auto& batch : pending_) {
        if (!OurSchema(batch->schema())) {
          pending_.clear();
          return Bug("stream item of another schema");
        }
      }
      return arrow::Status::OK();
    }
    if (arrow::py::is_table(item)) {
      auto table = arrow::py::unwrap_table(item);
      if (!table.ok() || !(*table)->schema()->Equals(*schema_, false)) {
        return Bug("stream item of another schema");
      }
      current_ = std::make_shared<arrow::TableBatchReader>(*table);
      return arrow::Status::OK();
    }
    if (arrow::py::is_batch(item)) {
      auto batch = arrow::py::unwrap_batch(item);
      if (!batch.ok() || !(*batch)->schema()->Equals(*schema_, false)) {
        return Bug("stream item of another schema");
      }
      *out = std::move(*batch);
      return arrow::Status::OK();
    }
    if (PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 3) {
      long code = PyLong_AsLong(PyTuple_GET_ITEM(item, 0));
      Py_ssize_t size = 0;
      const char* text = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(item, 1), &size);
      char* extra = nullptr;
      Py_ssize_t extra_size = 0;
      bool ok = text != nullptr &&
                PyBytes_AsStringAndSize(PyTuple_GET_ITEM(item, 2), &extra, &extra_size) == 0;
      if (!ok || code < -1 ||
          code > static_cast<long>(arrow::flight::FlightStatusCode::Failed)) {
        PyErr_Clear();
        return Bug("stream error item");
      }
      std::string message(text, static_cast<size_t>(size));
      if (code == -1) return arrow::Status::UnknownError(std::move(message));
      return arrow::flight::MakeFlightError(
          static_cast<arrow::flight::FlightStatusCode>(code), std::move(message),
          std::string(extra, static_cast<size_t>(extra_size)));
    }
    return Bug("stream item");
  }

  // the declared schema, metadata aside; a source's own schema object, once equal, is
  // recognised by identity (one downstream stream's batches share it)
  bool OurSchema(const std::shared_ptr<arrow::Schema>& schema) {
    if (schema == matched_) return true;
    if (!schema->Equals(*schema_, false)) return false;
    matched_ = schema;
    return true;
  }

  PyObject* source_;
  std::shared_ptr<arrow::Schema> schema_;
  std::shared_ptr<arrow::Schema> matched_;
  std::shared_ptr<arrow::RecordBatchReader> current_;
  std::vector<std::shared_ptr<arrow::RecordBatch>> pending_;  // a list item's batches
  size_t next_ = 0;  // the next of pending_ to hand out
};

// The one-pass check of router.stitch.direct.OnGridRelay (see _whole_run there): is a
// chunk of downstream rows exactly the next len(chunk) slots of the grid as whole blocks?
// Every row: a RecordBatch of one row in the grid's schema (metadata included), its time
// column unsliced without nulls and equal to the slot (consecutive from `expected` by
// `duration`, before `end` when bounded), every channel an unsliced one-row list without a
// null list whose offsets are [0, samples]. Runs with the GIL held; costs no Python object
// per row. A row it declines goes through the Python per-block path, which decides.
// Returns the chunk's size in bytes (what its buffers span, as the output's byte count), or
// -1 when it is not such a run.
class RunChecker {
 public:
  RunChecker(std::shared_ptr<arrow::Schema> schema, int64_t duration,
             std::vector<int32_t> samples)
      : schema_(std::move(schema)), duration_(duration), samples_(std::move(samples)) {}

  int64_t WholeRun(const Batches& chunk, int64_t expected, bool bounded, int64_t end) {
    const size_t rows = chunk.size();
    const size_t columns = samples_.size() + 1;
    int64_t bytes = 0;
    for (size_t i = 0; i < rows; ++i) {
      if (chunk[i] == nullptr) return -1;
      const arrow::RecordBatch& batch = *chunk[i];
      if (batch.num_rows() != 1 || static_cast<size_t>(batch.num_columns()) != columns) {
        return -1;
      }
      if (!SameSchema(batch.schema())) return -1;
      const arrow::ArrayData& time = *batch.column_data(0);
      if (time.type->id() != arrow::Type::INT64 || time.offset != 0 || time.length != 1 ||
          time.GetNullCount() != 0 || time.buffers.size() < 2 || time.buffers[1] == nullptr) {
        return -1;
      }
      const int64_t t = time.GetValues<int64_t>(1)[0];
      bytes += BufferBytes(time);
      if (t != expected + static_cast<int64_t>(i) * duration_ || (bounded && t >= end)) return -1;
      for (size_t c = 1; c < columns; ++c) {
        const arrow::ArrayData& cell = *batch.column_data(static_cast<int>(c));
        if (cell.type->id() != arrow::Type::LIST || cell.offset != 0 || cell.length != 1 ||
            cell.GetNullCount() != 0 || cell.buffers.size() < 2 ||
            cell.buffers[1] == nullptr || cell.buffers[1]->size() < 8 ||
            cell.child_data.size() != 1) {
          return -1;
        }
        const int32_t* offsets = cell.GetValues<int32_t>(1);
        if (offsets[0] != 0 || offsets[1] != samples_[c - 1] ||
            cell.child_data[0]->length < samples_[c - 1]) {
          return -1;
        }
        bytes += BufferBytes(cell);
      }
    }
    return bytes;
  }

 private:
  // the bytes of `data`'s buffers and its children's (as pyarrow's get_total_buffer_size
  // counts a batch whose buffers are not shared)
  static int64_t BufferBytes(const arrow::ArrayData& data) {
    int64_t total = 0;
    for (const auto& buffer : data.buffers) {
      if (buffer != nullptr) total += buffer->size();
    }
    for (const auto& child : data.child_data) total += BufferBytes(*child);
    return total;
  }

  // the grid's schema, metadata included; a downstream's own schema object, once equal,
  // is recognised by identity (one stream's batches share it)
  bool SameSchema(const std::shared_ptr<arrow::Schema>& schema) {
    if (schema == matched_) return true;
    if (!schema->Equals(*schema_, true)) return false;
    matched_ = schema;
    return true;
  }

  std::shared_ptr<arrow::Schema> schema_;
  int64_t duration_;
  std::vector<int32_t> samples_;
  std::shared_ptr<arrow::Schema> matched_;
};

// Up to `limit` batches of `reader` into `out`, without the GIL (the caller released it);
// `received` counts every batch as it arrives, so another thread (the feed's idle watch)
// sees progress during a long read. Returns 0 (limit reached), 1 (end) or 2 (failed).
inline int ReadRows(arrow::RecordBatchReader* reader, int64_t limit, int64_t* received,
                    std::vector<std::shared_ptr<arrow::RecordBatch>>* out) {
  std::atomic_ref<int64_t> count(*received);
  std::shared_ptr<arrow::RecordBatch> batch;
  while (static_cast<int64_t>(out->size()) < limit) {
    if (!reader->ReadNext(&batch).ok()) return 2;
    if (batch == nullptr) return 1;
    out->push_back(std::move(batch));
    count.fetch_add(1, std::memory_order_relaxed);
  }
  return 0;
}

inline std::shared_ptr<arrow::RecordBatchReader> MakeChunkReader(
    PyObject* source, std::shared_ptr<arrow::Schema> schema) {
  return std::make_shared<ChunkReader>(source, std::move(schema));
}

}  // namespace router_native
