"""The Arrakis wire layer shared by the router and router_backends (imports neither scopemap nor the rest of router)."""
