from collections.abc import Iterable

import pyarrow as pa

PYARROW_VERSION: str

def chunk_reader(
    schema: pa.Schema,
    source: Iterable[pa.Table | pa.RecordBatch | tuple[int, str, bytes]],
) -> pa.RecordBatchReader: ...
