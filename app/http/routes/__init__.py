"""Route handlers, one module per URL family; each module exports its `router` with what its handlers need."""
