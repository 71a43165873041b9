#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| presenced_config::fuzzing::config_xml(data));
