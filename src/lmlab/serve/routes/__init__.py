"""The endpoints, one module per family; each has a `router` that `create_app` includes, and its
handlers reach the shared `Server` as `request.app.state.server`."""
