#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| presenced_core::fuzzing::cluster_node(data));
