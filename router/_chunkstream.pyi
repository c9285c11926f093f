from collections.abc import Iterable

import pyarrow as pa

PYARROW_VERSION: str

def chunk_reader(
    schema: pa.Schema,
    source: Iterable[pa.Table | pa.RecordBatch | tuple[int, str, bytes]],
) -> pa.RecordBatchReader: ...

class RunCheck:
    def __init__(self, schema: pa.Schema, duration: int, samples: list[int]) -> None: ...
    def check(self, chunk: list[pa.RecordBatch], expected: int, end: int | None) -> bool: ...
