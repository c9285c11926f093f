from collections.abc import Iterable
from typing import Any

import pyarrow as pa

PYARROW_VERSION: str

def chunk_reader(
    schema: pa.Schema,
    source: Iterable[list[pa.RecordBatch] | pa.Table | pa.RecordBatch | tuple[int, str, bytes]],
) -> pa.RecordBatchReader: ...

class RunCheck:
    def __init__(self, schema: pa.Schema, duration: int, samples: list[int]) -> None: ...
    def check(self, chunk: list[pa.RecordBatch], expected: int, end: int | None) -> int: ...

def read_rows(
    reader: pa.RecordBatchReader, limit: int, received: Any
) -> tuple[list[pa.RecordBatch], int]: ...
