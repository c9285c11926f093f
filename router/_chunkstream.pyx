# cython: language_level=3
# distutils: language=c++
"""The native output stage of a DoGet: see _chunkstream.h and router/outstream.py.

Built by hatch_build.py against the installed pyarrow (its C++ ABI changes with every major
version); router/outstream.py checks the version before using it."""

from libcpp.memory cimport shared_ptr
from pyarrow.includes.libarrow cimport CRecordBatchReader, CSchema
from pyarrow.lib cimport RecordBatchReader, pyarrow_unwrap_schema

cdef extern from "_chunkstream.h" namespace "router_native":
    shared_ptr[CRecordBatchReader] MakeChunkReader(object source, shared_ptr[CSchema] schema)

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
    """A ``pyarrow.RecordBatchReader`` of ``schema`` over the items of ``source`` (Tables,
    RecordBatches, or one final ``(code, message, extra_info)`` Flight error)."""
    cdef shared_ptr[CSchema] c_schema = pyarrow_unwrap_schema(schema)
    if c_schema.get() == NULL:
        raise TypeError(f"expected a pyarrow.Schema, got {type(schema).__name__}")
    cdef RecordBatchReader reader = RecordBatchReader.__new__(RecordBatchReader)
    reader.reader = MakeChunkReader(iter(source), c_schema)
    return reader
