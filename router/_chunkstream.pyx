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
from pyarrow.lib cimport (
    RecordBatchReader,
    pyarrow_unwrap_batch,
    pyarrow_unwrap_schema,
    pyarrow_wrap_batch,
)

ctypedef vector[shared_ptr[CRecordBatch]] Batches

cdef extern from "_chunkstream.h" namespace "router_native":
    ctypedef cbool (*TakeRowsFn)(object item, Batches* out) noexcept
    void SetTakeRows(TakeRowsFn fn)
    shared_ptr[CRecordBatchReader] MakeChunkReader(object source, shared_ptr[CSchema] schema)
    int ReadRows(CRecordBatchReader* reader, int64_t limit, int64_t* received,
                 Batches* out) nogil
    cdef cppclass RunChecker:
        RunChecker(shared_ptr[CSchema] schema, int64_t duration, vector[int32_t] samples)
        int64_t WholeRun(const Batches& chunk, int64_t expected, cbool bounded, int64_t end)

cdef extern from *:
    """
    #ifndef ROUTER_PYARROW_VERSION
    #define ROUTER_PYARROW_VERSION "unknown"
    #endif
    """
    const char* ROUTER_PYARROW_VERSION

#: the pyarrow version this module was compiled against
PYARROW_VERSION = ROUTER_PYARROW_VERSION.decode()


cdef class Rows:
    """Record batches held in C++: what ``read_rows`` returns and the one-pass check takes,
    without a Python object per row. A sequence of ``pyarrow.RecordBatch`` (each made on
    access); ``nbytes`` is set by whoever measured them (the one-pass check). The native
    output stage takes a Rows' batches over, leaving it empty (see _chunkstream.h)."""

    cdef Batches batches
    cdef public int64_t nbytes

    def __init__(self, batches=(), int64_t nbytes=0):
        cdef shared_ptr[CRecordBatch] c_batch
        for batch in batches:
            c_batch = pyarrow_unwrap_batch(batch)
            if c_batch.get() == NULL:
                raise TypeError(f"expected pyarrow.RecordBatch, got {type(batch).__name__}")
            self.batches.push_back(c_batch)
        self.nbytes = nbytes

    def __len__(self):
        return self.batches.size()

    @property
    def num_rows(self):
        return self.batches.size()

    def __getitem__(self, index):
        cdef Py_ssize_t n = self.batches.size()
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(n))]
        cdef Py_ssize_t i = index
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("Rows index out of range")
        return pyarrow_wrap_batch(self.batches[i])

    def __iter__(self):
        cdef size_t i = 0
        while i < self.batches.size():
            yield pyarrow_wrap_batch(self.batches[i])
            i += 1

    def to_batches(self):
        return list(self)

    def __eq__(self, other):
        if isinstance(other, (Rows, list)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None

    def __repr__(self):
        return f"<Rows {self.batches.size()} batches, {self.nbytes} bytes>"


cdef cbool _take_rows(object item, Batches* out) noexcept:
    if type(item) is not Rows:
        return False
    out[0].swap((<Rows>item).batches)
    return True


SetTakeRows(_take_rows)


def chunk_reader(schema, source):
    """A ``pyarrow.RecordBatchReader`` of ``schema`` over the items of ``source`` (Rows,
    Tables, RecordBatches, or one final ``(code, message, extra_info)`` Flight error)."""
    cdef shared_ptr[CSchema] c_schema = pyarrow_unwrap_schema(schema)
    if c_schema.get() == NULL:
        raise TypeError(f"expected a pyarrow.Schema, got {type(schema).__name__}")
    cdef RecordBatchReader reader = RecordBatchReader.__new__(RecordBatchReader)
    reader.reader = MakeChunkReader(iter(source), c_schema)
    return reader


cdef class RunCheck:
    """The one-pass check of ``router.stitch.direct.OnGridRelay`` for one grid (see
    ``RunChecker`` in _chunkstream.h): ``check(chunk, expected, end)`` is the chunk's size
    in bytes when ``chunk`` (Rows, or a list of batches) is exactly the next ``len(chunk)``
    slots from ``expected`` as whole blocks, else -1."""

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

    def check(self, chunk, int64_t expected, end):
        cdef Batches listed
        cdef Batches* rows = &listed
        cdef shared_ptr[CRecordBatch] c_batch
        if type(chunk) is Rows:
            rows = &(<Rows>chunk).batches
        elif isinstance(chunk, list):
            for batch in chunk:
                c_batch = pyarrow_unwrap_batch(batch)
                if c_batch.get() == NULL:
                    return -1
                listed.push_back(c_batch)
        else:
            return -1
        if end is None:
            return self.checker.get().WholeRun(rows[0], expected, False, 0)
        return self.checker.get().WholeRun(rows[0], expected, True, <int64_t>end)


def read_rows(RecordBatchReader reader, int64_t limit, int64_t[::1] received):
    """Up to ``limit`` record batches of ``reader`` (a :class:`Rows`), read with the GIL
    released once, and
    how the read stopped: 0 (``limit`` reached), 1 (end of stream) or 2 (the read failed:
    the caller raises the error, e.g. with the Flight reader's ``read_chunk()``, which
    returns the stream's final status again with its Flight class). ``received[0]`` counts
    the batches as they arrive (readable by another thread during the read)."""
    cdef Rows rows = Rows.__new__(Rows)
    cdef int stop
    cdef int64_t* counter = &received[0]
    cdef CRecordBatchReader* c_reader = reader.reader.get()
    with nogil:
        stop = ReadRows(c_reader, limit, counter, &rows.batches)
    return rows, stop
