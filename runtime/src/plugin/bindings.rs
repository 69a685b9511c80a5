//! Host bindings generated from `sdk/wit` (the single source of truth), one module per world.

pub(crate) mod transform {
    wasmtime::component::bindgen!({ path: "../sdk/wit", world: "transform" });
}

pub(crate) mod format {
    wasmtime::component::bindgen!({ path: "../sdk/wit", world: "format" });
}

pub(crate) mod partitioner {
    wasmtime::component::bindgen!({ path: "../sdk/wit", world: "partitioner" });
}
