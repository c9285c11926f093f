"""scopemap: load, validate, index and plan Arrakis scope maps. Pure: no sockets, no clock."""
