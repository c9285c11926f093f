"""scopemap: load, validate, index and plan Arrakis scope maps. Pure: no sockets, no clock.

Load a map (never raises on user input), index it once, plan requests against it at a given
GPS time (integer ns):

>>> from scopemap import RoutingIndex, StreamRequest, load_text, plan_stream
>>> result = load_text('''
... grpc://live.example.org:31206:
...   scopes: {H1: [{all: true}]}
...   retention: {newest: 0, oldest: 600}
... grpc://archive.example.org:31206:
...   scopes: {H1: [{all: true}]}
...   retention: {newest: 300, oldest: .inf}
... ''', "map.yaml")
>>> result.diagnostics
()
>>> index = RoutingIndex(result.scope_map)
>>> S = 1_000_000_000
>>> now = 1_400_000_000 * S
>>> request = StreamRequest(("H1:GDS-CALIB_STRAIN",), now - 700 * S, now - 100 * S)
>>> for s in plan_stream(index, request, now).slices:
...     print(s.start // S, s.end // S, s.groups[0].endpoints)
1399999300 1399999700 ('grpc://archive.example.org:31206',)
1399999700 1399999900 ('grpc://live.example.org:31206',)
"""

from scopemap.export import replays_json, to_upstream_json
from scopemap.index import RoutingIndex, ScopeIndex
from scopemap.loader import LoadResult, load_path, load_text
from scopemap.model import (
    ChannelName,
    Diagnostic,
    Endpoint,
    Replay,
    Retention,
    ScopeEntry,
    ScopeMap,
    Severity,
    parse_channel_name,
)
from scopemap.plan import (
    ChannelGroup,
    DescribePlan,
    DescribeRequest,
    FindPlan,
    FindRequest,
    FindTarget,
    Plan,
    PublishPlan,
    PublishRequest,
    Reason,
    StreamPlan,
    StreamRequest,
    StreamSlice,
    Uncovered,
)
from scopemap.planner import plan, plan_describe, plan_find, plan_publish, plan_stream
from scopemap.replay import ReplayError
from scopemap.retention import RetentionTree

__all__ = [
    "ChannelGroup",
    "ChannelName",
    "DescribePlan",
    "DescribeRequest",
    "Diagnostic",
    "Endpoint",
    "FindPlan",
    "FindRequest",
    "FindTarget",
    "LoadResult",
    "Plan",
    "PublishPlan",
    "PublishRequest",
    "Reason",
    "Replay",
    "ReplayError",
    "Retention",
    "RetentionTree",
    "RoutingIndex",
    "ScopeEntry",
    "ScopeIndex",
    "ScopeMap",
    "Severity",
    "StreamPlan",
    "StreamRequest",
    "StreamSlice",
    "Uncovered",
    "load_path",
    "load_text",
    "parse_channel_name",
    "plan",
    "plan_describe",
    "plan_find",
    "plan_publish",
    "plan_stream",
    "replays_json",
    "to_upstream_json",
]
