#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| presenced_frontends::fuzzing::soap_envelope(data));
