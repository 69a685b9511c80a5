//! Guest bindings generated from `sdk/wit` (one module per world). Hidden: plugin authors use the
//! traits and export macros instead.

pub mod transform {
    wit_bindgen::generate!({
        path: "wit",
        world: "transform",
        pub_export_macro: true,
        runtime_path: "::sluice_sdk::__wit_bindgen::rt",
    });
}

pub mod format {
    wit_bindgen::generate!({
        path: "wit",
        world: "format",
        pub_export_macro: true,
        runtime_path: "::sluice_sdk::__wit_bindgen::rt",
    });
}

pub mod partitioner {
    wit_bindgen::generate!({
        path: "wit",
        world: "partitioner",
        pub_export_macro: true,
        runtime_path: "::sluice_sdk::__wit_bindgen::rt",
    });
}

pub use format::exports::sluice::plugin::format_plugin::Guest as FormatGuest;
pub use partitioner::exports::sluice::plugin::partitioner_plugin::Guest as PartitionerGuest;
pub use transform::exports::sluice::plugin::transform_plugin::Guest as TransformGuest;
