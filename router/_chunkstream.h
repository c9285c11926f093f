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

#include <memory>
#include <string>
#include <utility>

#include <arrow/api.h>
#include <arrow/flight/types.h>
#include <arrow/python/pyarrow.h>

namespace router_native {

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

  PyObject* source_;
  std::shared_ptr<arrow::Schema> schema_;
  std::shared_ptr<arrow::RecordBatchReader> current_;
};

inline std::shared_ptr<arrow::RecordBatchReader> MakeChunkReader(
    PyObject* source, std::shared_ptr<arrow::Schema> schema) {
  return std::make_shared<ChunkReader>(source, std::move(schema));
}

}  // namespace router_native
