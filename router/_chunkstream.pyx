# cython: language_level=3
# distutils: language=c++
"""The native output stage of a DoGet: see _chunkstream.h and router/outstream.py.

Built by hatch_build.py against the installed pyarrow (its C++ ABI changes with every major
version); router/outstream.py checks the version before using it."""

from libc.stdint cimport int32_t, int64_t
from libcpp cimport bool as cbool
from libcpp.memory cimport shared_ptr, unique_ptr
from libcpp.utility cimport move
from libcpp.vector cimport vector
from pyarrow.includes.libarrow cimport CRecordBatch, CRecordBatchReader, CSchema
from pyarrow.lib cimport RecordBatchReader, pyarrow_unwrap_schema, pyarrow_wrap_batch

cdef extern from "_chunkstream.h" namespace "router_native":
    shared_ptr[CRecordBatchReader] MakeChunkReader(object source, shared_ptr[CSchema] schema)
    int ReadRows(CRecordBatchReader* reader, int64_t limit, int64_t* received,
                 vector[shared_ptr[CRecordBatch]]* out) nogil
    cdef cppclass RunChecker:
        RunChecker(shared_ptr[CSchema] schema, int64_t duration, vector[int32_t] samples)
        int64_t WholeRun(object chunk, int64_t expected, cbool bounded, int64_t end)

cdef extern from *:
    """
    #ifndef ROUTER_PYARROW_VERSION
    #define ROUTER_PYARROW_VERSION "unknown"
    #endif
    """
    const char* ROUTER_PYARROW_VERSION

#: the pyarrow version this module was compiled against
PYARROW_VERSION = ROUTER_PYARROW_VERSION.decode()


def chunk_reader(schema, source):
    """A ``pyarrow.RecordBatchReader`` of ``schema`` over the items of ``source`` (lists of
    RecordBatches, Tables, RecordBatches, or one final ``(code, message, extra_info)``
    Flight error)."""
    cdef shared_ptr[CSchema] c_schema = pyarrow_unwrap_schema(schema)
    if c_schema.get() == NULL:
        raise TypeError(f"expected a pyarrow.Schema, got {type(schema).__name__}")
    cdef RecordBatchReader reader = RecordBatchReader.__new__(RecordBatchReader)
    reader.reader = MakeChunkReader(iter(source), c_schema)
    return reader


cdef class RunCheck:
    """The one-pass check of ``router.stitch.direct.OnGridRelay`` for one grid (see
    ``RunChecker`` in _chunkstream.h): ``check(chunk, expected, end)`` is the chunk's size
    in bytes when the list ``chunk`` is exactly the next ``len(chunk)`` slots from
    ``expected`` as whole blocks, else -1."""

    cdef unique_ptr[RunChecker] checker

    def __init__(self, schema, int64_t duration, samples):
        cdef shared_ptr[CSchema] c_schema = pyarrow_unwrap_schema(schema)
        if c_schema.get() == NULL:
            raise TypeError(f"expected a pyarrow.Schema, got {type(schema).__name__}")
        cdef vector[int32_t] counts
        for n in samples:
            counts.push_back(n)
        if <size_t>counts.size() + 1 != <size_t>len(schema):
            raise ValueError("one sample count per channel column")
        self.checker.reset(new RunChecker(c_schema, duration, move(counts)))

    def check(self, list chunk, int64_t expected, end):
        if end is None:
            return self.checker.get().WholeRun(chunk, expected, False, 0)
        return self.checker.get().WholeRun(chunk, expected, True, <int64_t>end)


def read_rows(RecordBatchReader reader, int64_t limit, int64_t[::1] received):
    """Up to ``limit`` record batches of ``reader``, read with the GIL released once, and
    how the read stopped: 0 (``limit`` reached), 1 (end of stream) or 2 (the read failed:
    the caller raises the error, e.g. with the Flight reader's ``read_chunk()``, which
    returns the stream's final status again with its Flight class). ``received[0]`` counts
    the batches as they arrive (readable by another thread during the read)."""
    cdef vector[shared_ptr[CRecordBatch]] batches
    cdef int stop
    cdef int64_t* counter = &received[0]
    cdef CRecordBatchReader* c_reader = reader.reader.get()
    with nogil:
        stop = ReadRows(c_reader, limit, counter, &batches)
    return [pyarrow_wrap_batch(b) for b in batches], stop
