"""scopemap: load, validate, index and plan Arrakis scope maps. Pure: no sockets, no clock.

>>> result = load_text(open("map.yaml").read(), "map.yaml")      # never raises
>>> index = RoutingIndex(result.scope_map)                        # once per map
>>> plan(index, StreamRequest(("H1:GDS-CALIB_STRAIN",), start, end), now_ns)
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
